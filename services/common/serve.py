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
import resource
import socket
from collections.abc import Coroutine, Mapping
from typing import Any

import uvicorn
import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.connection_limits import ConnectionLimits
from services.common.http import Readiness
from services.common.uvicorn_patches import DrainingServer, limited_protocol

# The longest an HTTP service waits for its requests in flight once it stops accepting.
GRACEFUL_SECONDS = 20.0


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



class _Lifespan:
    """One app's lifespan, run as its own task and driven message by message."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._app = app
        self._scope = scope
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Future[None] | None = None

    async def startup(self) -> str | None:
        """``None`` once the app has started, else why it did not."""
        self._task = asyncio.ensure_future(self._app(self._scope, self._inbox.get,
                                                     self._outbox.put))
        return await self._step({"type": "lifespan.startup"}, "lifespan.startup.complete")

    async def shutdown(self) -> str | None:
        return await self._step({"type": "lifespan.shutdown"}, "lifespan.shutdown.complete")

    async def _step(self, message: Message, done: str) -> str | None:
        assert self._task is not None
        self._inbox.put_nowait(message)
        answer = asyncio.ensure_future(self._outbox.get())
        pending: set[asyncio.Future[Any]] = {answer, self._task}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if answer.done():
            reply = answer.result()
            return None if reply["type"] == done else str(reply.get("message") or reply["type"])
        answer.cancel()
        failure = self._task.exception()
        return repr(failure) if failure else "the lifespan ended without answering"


class ByListener:
    """One server, several listeners: each request goes to the app of the port it arrived on
    (``apps``: port → app, in the order the apps start).

    The apps' lifespans start in that order and stop in the reverse one: an app that calls
    into another (the token service's edge calls its token app) comes after it, so it is
    serving only while what it calls is, and it finishes before the other closes its stores.
    """

    def __init__(self, apps: Mapping[int, ASGIApp]) -> None:
        self._apps = dict(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        server = scope.get("server")
        app = self._apps.get(server[1]) if server else None
        if app is None:  # not one of the listeners this server was given
            raise RuntimeError(f"no app listens on {server!r}")
        await app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        started: list[_Lifespan] = []
        for app in self._apps.values():
            lifespan = _Lifespan(app, scope)
            failure = await lifespan.startup()
            if failure is not None:
                for other in reversed(started):
                    await other.shutdown()
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
            started.append(lifespan)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        failures = [failure for lifespan in reversed(started)
                    if (failure := await lifespan.shutdown()) is not None]
        if failures:
            await send({"type": "lifespan.shutdown.failed", "message": "; ".join(failures)})
        else:
            await send({"type": "lifespan.shutdown.complete"})


def bind(host: str, port: int) -> socket.socket:
    """A listening address bound now (``port`` 0: a free one, which the socket then tells),
    for :func:`serve_http`'s ``sockets``; exits as uvicorn does when it is taken."""
    return uvicorn.Config("unused", host=host, port=port, log_config=None).bind_socket()


async def serve_http(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    readiness: Readiness,
    drain_seconds: float = 0.0,
    graceful_seconds: float = GRACEFUL_SECONDS,
    limits: ConnectionLimits | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serves ``app`` on ``host``:``port`` (or, when given, on ``sockets`` already bound:
    :func:`bind`) until SIGTERM or SIGINT; ``limits`` bound what clients may hold before a
    request reaches the app (see :class:`ConnectionLimits`)."""
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
    await DrainingServer(config, readiness, drain_seconds).serve(sockets=sockets)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine on uvloop: its event loop and transports are C, which
    takes a tenth or more off the CPU each request costs (``make bench-peer --baseline``,
    bench/README.md). gRPC's asyncio stack runs on any asyncio loop, uvloop included
    (tests/common/test_serve_loop.py serves and calls gRPC and HTTP on it)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
