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

from services.common.http import Readiness


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
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http="httptools",
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
