"""Running an HTTP service under uvicorn with a graceful stop.

On SIGTERM the service first reports not-ready (``/readyz`` → 503, and any gRPC server it runs
reports ``NOT_SERVING`` through :attr:`Readiness.on_drain`, so load balancers and gRPC clients
stop sending new requests), keeps serving for ``drain_seconds`` — closing each keep-alive
connection after its next answer — then stops accepting, finishes the requests in flight (up to
``GRACEFUL_SECONDS``) and runs the lifespan shutdown, which stops any gRPC server the service
runs (GOAWAY, calls in flight finish within ``grpc_server.STOP_GRACE_SECONDS``). A second signal
stops at once.

From SIGTERM to exit thus takes at most ``drain_seconds + GRACEFUL_SECONDS`` (plus the gRPC
grace for the services that run one): Kubernetes' ``terminationGracePeriodSeconds`` must exceed
that plus the ``preStop`` pause (a test checks the manifests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.http import Readiness

log = logging.getLogger("otesse.serve")
# The longest an HTTP service waits for its requests in flight once it stops accepting.
GRACEFUL_SECONDS = 20.0


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


class _CloseWhileDraining:
    """Answers ``Connection: close`` while draining.

    A Service pins each keep-alive connection of a client (the gateway's upstream pool) to one
    pod. Closed at the stop while idle, such a connection can meet a request sent at that very
    moment, which then fails. Closed after an answer instead, it cannot: the client stops using
    it. A drain longer than the clients' keep-alive expiry (the gateway's is 4 s) leaves no
    idle connection for the stop to close.
    """

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self._app = app
        self._readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def close_after(message: Message) -> None:
            # RFC 9112 §9.6: "A client that receives a "close" connection option MUST cease
            # sending requests on that connection and close it after reading the response
            # message containing the "close" connection option".
            if message["type"] == "http.response.start" and self._readiness.draining:
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"connection", b"close")]}
            await send(message)

        await self._app(scope, receive, close_after)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain_seconds: float) -> None:
        super().__init__(config)
        self._readiness = readiness
        self._drain_seconds = drain_seconds
        self._drain_deadline: float | None = None
        self._drain_announced = False

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
        # Ticks run on the event loop every 0.1 s, where the async hooks can; the signal
        # handler above cannot await.
        if self._readiness.draining and not self._drain_announced:
            self._drain_announced = True
            await self._announce_drain()
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            return True
        return bool(await super().on_tick(counter))

    async def _announce_drain(self) -> None:
        log.info("draining", extra={"drain_seconds": self._drain_seconds})
        for hook in self._readiness.on_drain:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - one failed hook must not stop the drain
                log.exception("drain hook failed")


async def serve_http(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    readiness: Readiness,
    drain_seconds: float = 0.0,
    graceful_seconds: float = GRACEFUL_SECONDS,
    max_header_bytes: int | None = None,
) -> None:
    """Serves ``app`` until SIGTERM or SIGINT; ``max_header_bytes`` caps the request line and
    headers while they arrive (see :func:`header_capped_protocol`)."""
    config = uvicorn.Config(
        _CloseWhileDraining(app, readiness),
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
