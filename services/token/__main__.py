"""Entry point: ``python -m services.token`` (or ``otesse-auth serve token``).

With ``OTESSE_TOKEN_EDGE_PORT`` set, the process runs a second HTTP server beside the service's
own (the gateway's upstream, the probes, ``/metrics``): a public one where an edge runs in this
process in front of the token app, with no HTTP hop between them. The ingress sends the token
service's public paths there. A service never imports another, so the edge is handed in by the
composition root (``otesse-auth serve token``: the gateway's edge, ``services.cli.edge``) with
its connection limits, which bound that listener only. The public server starts once the token
app has started and stops before it stops (:class:`~services.common.serve.WithCompanion`); the
two share the graceful stop's time, so the process stops within the same bound as before.
Without it, the service listens on its own port only, as it always has.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from services.common.connection_limits import ConnectionLimits
from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import (
    GRACEFUL_SECONDS,
    WithCompanion,
    http_config,
    run,
    serve_http,
)
from services.common.settings import ConfigError
from services.common.uvicorn_patches import SignalFreeServer
from services.token.app import create_app
from services.token.settings import TokenSettings

# The edge in front of the token app, and the connection limits of its listener.
Edge = Callable[[Readiness, ASGIApp], tuple[ASGIApp, ConnectionLimits]]


async def serve(settings: TokenSettings, edge: Edge | None = None) -> None:
    readiness = Readiness()
    app: ASGIApp = create_app(settings, readiness)
    if settings.edge_port is not None:
        if edge is None:
            raise ConfigError("OTESSE_TOKEN_EDGE_PORT is served by `otesse-auth serve token`, "
                              "which puts the gateway's edge in front of the token app")
        public_app, limits = edge(readiness, app)
        # Signals belong to the service's own server, which decides when to stop. The two
        # servers finish their requests one after the other at the stop: they share the one
        # graceful period the Deployment's termination grace is counted with.
        graceful = GRACEFUL_SECONDS / 2
        public = SignalFreeServer(http_config(public_app, host=settings.edge_host,
                                              port=settings.edge_port, readiness=readiness,
                                              graceful_seconds=graceful, limits=limits))
        app = WithCompanion(app, public)
    else:
        graceful = GRACEFUL_SECONDS
    await serve_http(app, host=settings.http_host, port=settings.http_port,
                     readiness=readiness, drain_seconds=settings.drain_seconds,
                     graceful_seconds=graceful)


def main(edge: Edge | None = None) -> None:
    settings = TokenSettings.from_env()
    configure_logging("token", settings.log_level)
    run(serve(settings, edge))


if __name__ == "__main__":
    main()
