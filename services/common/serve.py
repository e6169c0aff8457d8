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
from collections.abc import Coroutine
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



class WithCompanion:
    """``app``, and a second server in the same process that runs only while ``app`` is up:
    the companion starts once ``app``'s lifespan has started, and stops (its connections
    finished, its own lifespan shut down) before ``app``'s lifespan shuts down.

    The token service's public edge is such a companion (:mod:`services.token.__main__`): it
    calls into the token app, so it must not take a request before the app's stores are open
    nor hold one after they close. Its own server keeps its own connection limits: the public
    listener's caps never count the connections of the service's own port (the gateway's
    upstream pool, the probes, Prometheus). Signals stay with the main server
    (:class:`~services.common.uvicorn_patches.SignalFreeServer`), whose drain the companion
    follows through the shared :class:`Readiness`.
    """

    def __init__(self, app: ASGIApp, companion: uvicorn.Server) -> None:
        self._app = app
        self._companion = companion
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return

        async def started(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                failure = await self._start()
                if failure is not None:
                    message = {"type": "lifespan.startup.failed", "message": failure}
            await send(message)

        async def stopping() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self._stop()
            return message

        await self._app(scope, stopping, started)

    async def _start(self) -> str | None:
        """``None`` once the companion listens, else why it does not (its address taken or
        unusable: the start fails, and the process stops saying so)."""
        config = self._companion.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        listener = socket.socket(family)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((config.host, config.port))
        except OSError as exc:
            listener.close()
            return f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        self._task = asyncio.create_task(self._companion.serve(sockets=[listener]))
        while not self._companion.started:
            if self._task.done():
                return "the second listener stopped while starting"
            await asyncio.sleep(0.01)
        return None

    async def _stop(self) -> None:
        if self._task is None or self._task.done():
            return
        self._companion.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


def http_config(app: ASGIApp, *, host: str, port: int, readiness: Readiness,
                graceful_seconds: float = GRACEFUL_SECONDS,
                limits: ConnectionLimits | None = None) -> uvicorn.Config:
    """How every HTTP listener of a service runs under uvicorn: ``Connection: close`` while
    draining, no access log or ``Server`` field of uvicorn's own, nobody's forwarded fields
    believed by uvicorn, and ``limits`` on what clients may hold before a request reaches the
    app (see :class:`ConnectionLimits`)."""
    return uvicorn.Config(
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
    config = http_config(app, host=host, port=port, readiness=readiness,
                         graceful_seconds=graceful_seconds, limits=limits)
    await DrainingServer(config, readiness, drain_seconds).serve()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine on uvloop: its event loop and transports are C, which
    takes a tenth or more off the CPU each request costs (``make bench-peer --baseline``,
    bench/README.md). gRPC's asyncio stack runs on any asyncio loop, uvloop included
    (tests/common/test_serve_loop.py serves and calls gRPC and HTTP on it)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
