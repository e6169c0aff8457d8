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
import functools
import ipaddress
import logging
import resource
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.errors import json_error
from services.common.http import Readiness
from services.common.metrics import CONNECTIONS_REFUSED

# -- uvicorn's HTTP protocol, limited -----------------------------------------------------------
# Every patch of uvicorn's private protocol lives here, in one class, and
# tests/common/test_serve.py fails loudly when the pinned uvicorn changes a method or attribute
# it relies on: the HttpToolsProtocol methods it overrides (connection_made, connection_lost,
# data_received, eof_received, on_message_begin, on_url, on_header, on_headers_complete,
# send_400_response) or whose behaviour it assumes (on_response_complete, shutdown), the
# transport, client, connections, cycle and loop attributes __init__ sets, and the cycle's
# keep_alive and response_complete (RequestResponseCycle.__init__ and send).

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A refused connection stays open this long for its client to read the answer (RFC 9112 §9.6).
_LINGER_SECONDS = 2.0
# At most this many refused connections linger at once; beyond, they are closed at once.
MAX_LINGERING = 256


def _refusal(status: bytes, error: str, description: str, *,
             retry_after: bool = False) -> bytes:
    body = json_error(error, description)
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"cache-control: no-store\r\ncontent-length: %d\r\n" % len(body)
            + (b"retry-after: 1\r\n" if retry_after else b"")
            + b"connection: close\r\n\r\n" + body)


_HEADERS_TOO_LARGE = _refusal(b"431 Request Header Fields Too Large", "invalid_request",
                              "The request headers are too large.")
_HEADERS_TOO_SLOW = _refusal(b"408 Request Timeout", "invalid_request",
                             "The request headers did not arrive in time.")
_SERVER_FULL = _refusal(b"503 Service Unavailable", "temporarily_unavailable",
                        "The server is busy; retry shortly.", retry_after=True)
_ADDRESS_FULL = _refusal(b"429 Too Many Requests", "too_many_requests",
                         "Too many connections from your address; retry shortly.",
                         retry_after=True)

log = logging.getLogger("otesse.serve")
# The longest an HTTP service waits for its requests in flight once it stops accepting.
GRACEFUL_SECONDS = 20.0


class _HeaderCap(Exception):
    """The request line and headers passed the cap while still arriving."""


class _Lingering:
    """How many refused connections of one server are lingering."""

    count = 0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of a server before any request reaches the app (None: no limit).

    * ``max_header_bytes``: the request line plus headers, counted while they arrive (httptools
      sets no limit of its own, so without this a client can make the server hold megabytes of
      headers before the application sees any): past it, ``431``.
    * ``header_timeout``: seconds from a connection's start, or a later request's first byte,
      to the end of the request's headers: past it, ``408`` (or a silent close when nothing was
      sent). Idle time between requests is uvicorn's keep-alive timeout.
    * ``max_connections``: connections open at once; past it, ``503``.
    * ``max_connections_per_ip``: connections open at once from one peer address, except peers
      in ``unlimited_peers`` (a load balancer speaks for many clients); past it, ``429``.

    Every refusal is a short JSON answer with ``connection: close``, never an empty reply: the
    connection stops reading requests, half-closes after the answer and lingers briefly so the
    client can read it before the close (while more than ``MAX_LINGERING`` refused connections
    linger at once, it closes right after the answer instead, so refusals never pile up).
    """

    max_header_bytes: int | None = None
    header_timeout: float | None = None
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    unlimited_peers: tuple[Network, ...] = ()


def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``; one class per server (it counts its own
    connections)."""
    per_ip: dict[str, int] = {}
    lingering = _Lingering()

    @functools.lru_cache(maxsize=4096)
    def limited(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not any(address in network for network in limits.unlimited_peers)

    class LimitedProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _over_cap = False
        _refusing = False
        # Bytes of the current request have arrived and its headers are not complete.
        _in_headers = False
        _counted_peer: str | None = None
        _header_timer: asyncio.TimerHandle | None = None
        _linger: asyncio.TimerHandle | None = None

        # -- connections ---------------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if limits.max_connections is not None and (
                    len(self.connections) > limits.max_connections):
                self._refuse(_SERVER_FULL, "connections")
                return
            peer = self.client[0] if self.client else None
            if peer is not None and limits.max_connections_per_ip is not None and limited(peer):
                held = per_ip.get(peer, 0)
                if held >= limits.max_connections_per_ip:
                    self._refuse(_ADDRESS_FULL, "connections_per_ip")
                    return
                per_ip[peer] = held + 1
                self._counted_peer = peer
            # The idle time before the first byte counts against the first request's headers.
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
                lingering.count -= 1
            peer, self._counted_peer = self._counted_peer, None
            if peer is not None:
                left = per_ip[peer] - 1
                if left:
                    per_ip[peer] = left
                else:
                    del per_ip[peer]
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refusing:
                return  # answered already: what else arrives is dropped unread
            super().data_received(data)

        def eof_received(self) -> None:
            if self._refusing:
                # The client read the answer and closed its side: nothing more to wait for.
                self.transport.close()
                return
            super().eof_received()

        # -- the header deadline -------------------------------------------------------------
        def _arm(self) -> None:
            if limits.header_timeout is not None and self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout,
                                                          self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._in_headers:
                self._refuse(_HEADERS_TOO_SLOW, "header_timeout")
            elif self.cycle is None or self.cycle.response_complete:
                CONNECTIONS_REFUSED.labels("header_timeout").inc()
                self.transport.close()  # nothing was asked: nothing to answer

        # -- the header cap (and the deadline's start and end) -------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._in_headers = True
            # The first request's deadline started with the connection; a later one's starts
            # with its first byte.
            self._arm()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if limits.max_header_bytes is not None and (
                    self._header_bytes > limits.max_header_bytes):
                self._over_cap = True
                raise _HeaderCap()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._over_cap:
                super().send_400_response(msg)
                return
            self._refuse(_HEADERS_TOO_LARGE, "header_bytes")

        # -- refusing --------------------------------------------------------------------------
        def _refuse(self, answer: bytes, limit: str) -> None:
            """Answers ``answer`` and closes: at once, or after the response in progress."""
            CONNECTIONS_REFUSED.labels(limit).inc()
            self._disarm()
            self._refusing = True
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined request is the one refused: finish the answer in progress, then
                # close instead of reading the next request.
                self.cycle.keep_alive = False
                return
            transport = self.transport
            transport.write(answer)
            if lingering.count >= MAX_LINGERING or not transport.can_write_eof():
                transport.close()
                return
            # RFC 9112 §9.6: closing with the client's request unread would send a reset that
            # "might erase the client's unacknowledged input buffers before they can be read" —
            # the answer. Half-close instead, drop what arrives, and close when the client does
            # (or after a short linger).
            transport.write_eof()
            self._linger = self.loop.call_later(_LINGER_SECONDS, transport.close)
            lingering.count += 1

    return LimitedProtocol


def raise_open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit; returns the limit.

    A server's connections are file descriptors: with the usual soft limit (1024) a flood of
    connections exhausts them long before any connection cap, and new clients get empty replies.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


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
    limits: ConnectionLimits | None = None,
) -> None:
    """Serves ``app`` until SIGTERM or SIGINT; ``limits`` bound what clients may hold before
    a request reaches the app (see :class:`ConnectionLimits`)."""
    config = uvicorn.Config(
        _CloseWhileDraining(app, readiness),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=limited_protocol(limits) if limits else "httptools",
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
