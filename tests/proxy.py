"""A TCP proxy on loopback that a test can cut and restore, to take a real store "down" and
bring it back without touching the shared server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any


def _drop(writer: asyncio.StreamWriter) -> None:
    """Resets the connection and closes the writer (an unclosed one warns when collected)."""
    with contextlib.suppress(Exception):
        writer.transport.abort()
    with contextlib.suppress(Exception):
        writer.close()


class FaultProxy:
    """``hold_closes``: when the server closes a connection, the client is not told until
    :meth:`cut` — what a client sees when the server's last words arrive before its close
    (a server shutting down says why, then closes)."""

    def __init__(self, target_host: str, target_port: int, *, hold_closes: bool = False) -> None:
        self._target = (target_host, target_port)
        self._hold_closes = hold_closes
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cutting = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stops listening and drops every open connection, like a crashed server."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._cutting.set()
        for writer in list(self._writers):
            _drop(writer)
        self._writers.clear()

    async def restore(self) -> None:
        self._cutting.clear()
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _drop(writer)
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                       from_server: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            if from_server and self._hold_closes:
                await self._cutting.wait()
            _drop(dst)

        await asyncio.gather(pipe(reader, up_writer, from_server=False),
                             pipe(up_reader, writer, from_server=True))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


class ProxyThread:
    """A :class:`FaultProxy` on an event loop of its own thread, so it keeps relaying while the
    test's loop is busy (a load generator) or blocked (waiting for processes to start)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = FaultProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._proxy.port

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        self._thread.start()
        self._run(self._proxy.start())

    def cut(self) -> None:
        self._run(self._proxy.cut())

    def restore(self) -> None:
        self._run(self._proxy.restore())

    def close(self) -> None:
        self._run(self._proxy.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
