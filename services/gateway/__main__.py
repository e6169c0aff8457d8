"""Entry point: ``python -m services.gateway`` (or ``otesse-auth serve gateway``).

Two listeners in one process: the public proxy (``OTESSE_GATEWAY_PORT``) with the graceful
SIGTERM drain of :func:`services.common.serve.serve_http` and the connection limits of
:func:`services.gateway.app.connection_limits`, and the admin app
(``OTESSE_GATEWAY_ADMIN_PORT``: ``/healthz``, ``/readyz``, ``/metrics``), which keeps answering
(``/readyz`` → 503) while the public side drains, and stops after it.

At start-up the limit on open files is raised to the hard limit, and the connection cap is kept
below it (:func:`services.gateway.app.fitted_connection_limits`).
"""

from __future__ import annotations

import asyncio

import uvicorn

from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import run, serve_http
from services.common.uvicorn_patches import SignalFreeServer
from services.gateway.app import create_admin_app, create_app, fitted_connection_limits
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
    # Signals belong to the public server, which decides when to stop.
    admin = SignalFreeServer(uvicorn.Config(
        create_admin_app(readiness), host=settings.admin_host, port=settings.admin_port,
        log_config=None, access_log=False, lifespan="off", loop="none", server_header=False))
    admin_task = asyncio.create_task(admin.serve())
    while not admin.started:
        if admin_task.done():
            admin_task.result()  # the admin port could not be bound: stop here, saying why
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    limits = fitted_connection_limits(settings, upstream_pools=2)
    try:
        await serve_http(create_app(settings, readiness), host=settings.host, port=settings.port,
                         readiness=readiness, drain_seconds=settings.drain_seconds,
                         limits=limits)
    finally:
        admin.should_exit = True
        await admin_task


def main() -> None:
    settings = GatewaySettings.from_env()
    configure_logging("gateway", settings.log_level)
    run(serve(settings))


if __name__ == "__main__":
    main()
