"""Entry point: ``python -m services.gateway`` (or ``otesse-auth serve gateway``).

Two listeners in one process: the public proxy (``OTESSE_GATEWAY_PORT``) with the graceful
SIGTERM drain of :func:`services.common.serve.serve_http`, and the admin app
(``OTESSE_GATEWAY_ADMIN_PORT``: ``/healthz``, ``/readyz``, ``/metrics``), which keeps answering
(``/readyz`` → 503) while the public side drains, and stops after it.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import run, serve_http
from services.gateway.app import create_admin_app, create_app
from services.gateway.settings import GatewaySettings


def _loopback(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def serve(settings: GatewaySettings) -> None:
    readiness = Readiness()

    async def listening() -> None:
        # The admin port answers first: ready only once the public port takes connections.
        _, writer = await asyncio.open_connection(_loopback(settings.host), settings.port)
        writer.close()
        await writer.wait_closed()

    readiness.checks["listening"] = listening
    admin = uvicorn.Server(uvicorn.Config(
        create_admin_app(readiness), host=settings.admin_host, port=settings.admin_port,
        log_config=None, access_log=False, lifespan="off", loop="none", server_header=False))
    # Signals belong to the public server, which decides when to stop.
    admin.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    admin_task = asyncio.create_task(admin.serve())
    while not admin.started:
        if admin_task.done():
            admin_task.result()  # the admin port could not be bound: stop here, saying why
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    try:
        # Headers up to a few times the cap reach the app, which answers 431 as a page or JSON
        # by path; beyond that they are refused while still arriving, never held whole.
        await serve_http(create_app(settings, readiness), host=settings.host, port=settings.port,
                         readiness=readiness, drain_seconds=settings.drain_seconds,
                         max_header_bytes=4 * settings.max_header_bytes)
    finally:
        admin.should_exit = True
        await admin_task


def main() -> None:
    settings = GatewaySettings.from_env()
    configure_logging("gateway", settings.log_level)
    run(serve(settings), fast_loop=True)


if __name__ == "__main__":
    main()
