"""Serving an ASGI app on a real loopback port inside the test's event loop, and waiting for a
server to be ready."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def serve_app(app: ASGIApp, *, lifespan: Literal["on", "off"] = "on",
                    **options: Any) -> AsyncIterator[str]:
    """Runs ``app`` under uvicorn on 127.0.0.1 and a free port; yields its base URL.
    ``options`` are more ``uvicorn.Config`` arguments."""
    # As every service runs (services/common/serve.py): the app alone decides whom to believe
    # about the client's address; uvicorn would believe X-Forwarded-For from loopback.
    options = {"proxy_headers": False, **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                            lifespan=lifespan, loop="none", **options)
    server = uvicorn.Server(config)
    # The test runner owns the process's signals.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_ready(http: httpx.AsyncClient, what: str, *, attempts: int = 300) -> None:
    """Until ``GET /readyz`` on ``http``'s base URL answers 200, 50 ms apart (a server still
    starting refuses connections); fails naming ``what`` after ``attempts`` tries."""
    for _ in range(attempts):
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not become ready")
