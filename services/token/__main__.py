"""Entry point: ``python -m services.token`` (or ``otesse-auth serve token``).

With ``OTESSE_TOKEN_EDGE_PORT`` set, one server listens twice: the service's own port (the
gateway's upstream, the probes, ``/metrics``) and a public one where an edge runs in this process
in front of the token app, with no HTTP hop between them. The ingress sends the token service's
public paths there. A service never imports another, so the edge is handed in by the
composition root (``otesse-auth serve token``: the gateway's edge, ``services.cli.edge``); both
listeners then have its connection limits. Without it, the service listens on its own port
only, as it always has.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp

from services.common.connection_limits import ConnectionLimits
from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import ByListener, bind, run, serve_http
from services.common.settings import ConfigError
from services.token.app import create_app
from services.token.settings import TokenSettings

# The edge in front of the token app, and the connection limits of both listeners.
Edge = Callable[[Readiness, ASGIApp], tuple[ASGIApp, ConnectionLimits]]


async def serve(settings: TokenSettings, edge: Edge | None = None) -> None:
    readiness = Readiness()
    app = create_app(settings, readiness)
    if settings.edge_port is None:
        await serve_http(app, host=settings.http_host, port=settings.http_port,
                         readiness=readiness, drain_seconds=settings.drain_seconds)
        return
    if edge is None:
        raise ConfigError("OTESSE_TOKEN_EDGE_PORT is served by `otesse-auth serve token`, which "
                          "puts the gateway's edge in front of the token app")
    public_app, limits = edge(readiness, app)
    own, public = (bind(settings.http_host, settings.http_port),
                   bind(settings.edge_host, settings.edge_port))
    # The token app starts first and stops last: the edge calls into it.
    listeners = ByListener({own.getsockname()[1]: app, public.getsockname()[1]: public_app})
    await serve_http(listeners, host=settings.http_host, port=settings.http_port,
                     readiness=readiness, drain_seconds=settings.drain_seconds, limits=limits,
                     sockets=[own, public])


def main(edge: Edge | None = None) -> None:
    settings = TokenSettings.from_env()
    configure_logging("token", settings.log_level)
    run(serve(settings, edge))


if __name__ == "__main__":
    main()
