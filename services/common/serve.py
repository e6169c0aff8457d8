"""Running an HTTP service under uvicorn with a graceful stop.

On SIGTERM the service first reports not-ready (``/readyz`` → 503, so the load balancer stops
sending new requests), keeps serving for ``drain_seconds``, then stops accepting, finishes the
requests in flight (up to ``graceful_seconds``) and runs the lifespan shutdown, which stops any
gRPC server the service runs. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.http import Readiness


class _HeaderCap(Exception):
    """The request line and headers passed the cap while still arriving."""


def header_capped_protocol(limit: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a cap on the request line plus headers.

    httptools sets no limit of its own, so without this a client can make the server hold
    megabytes of headers before the application sees any. Past ``limit`` bytes the parser stops,
    the client gets ``431`` and the connection closes.
    """

    class HeaderCappedProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _over_cap = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > limit:
                self._over_cap = True
                raise _HeaderCap()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            if not self._over_cap:
                super().send_400_response(msg)
                return
            body = (b'{"error":"invalid_request",'
                    b'"error_description":"The request headers are too large."}')
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\ncache-control: no-store\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + body)
            self.transport.close()

    return HeaderCappedProtocol


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_seconds: float) -> None:
        super().__init__(config)
        self._readiness = readiness
        self._drain_seconds = drain_seconds
        self._drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's handler: it re-raises the signal after a graceful stop, so a clean
        # shutdown would exit with -15 (and Ctrl-C with a traceback) instead of 0.
        self._readiness.draining = True
        if self.should_exit:
            self.force_exit = True
        elif self._drain_deadline is None and self._drain_seconds > 0:
            self._drain_deadline = time.monotonic() + self._drain_seconds
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            return True
        return bool(await super().on_tick(counter))


async def serve_http(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    readiness: Readiness,
    drain_seconds: float = 0.0,
    graceful_seconds: float = 20.0,
    max_header_bytes: int | None = None,
) -> None:
    """Serves ``app`` until SIGTERM or SIGINT; ``max_header_bytes`` caps the request line and
    headers while they arrive (see :func:`header_capped_protocol`)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=header_capped_protocol(max_header_bytes) if max_header_bytes else "httptools",
        loop="none",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        h11_max_incomplete_event_size=16 * 1024,
    )
    await _DrainingServer(config, readiness, drain_seconds).serve()


def run(main: Coroutine[Any, Any, None], *, fast_loop: bool = False) -> None:
    """Runs a service's main coroutine; ``fast_loop`` uses uvloop (for services without gRPC,
    whose aio runtime is only supported on the standard loop)."""
    if fast_loop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)
