"""The gateway's edge in front of the token app, in the token process (``OTESSE_TOKEN_EDGE_PORT``,
:mod:`services.token.__main__`): wired here, in the composition root, because a service never
imports another.

The edge is the gateway's own (:func:`services.gateway.app.create_edge_app`) with the gateway's
settings (``OTESSE_GATEWAY_…``: hosts, trusted proxies, limits, rate limits), serving only the
token service's routes; its connection limits are the gateway's, fitted to the open-files
limit with room for the token service's own connections.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from services.common.connection_limits import ConnectionLimits
from services.common.http import Readiness
from services.gateway.app import create_edge_app, fitted_connection_limits
from services.gateway.settings import GatewaySettings


def token_edge(readiness: Readiness, app: ASGIApp) -> tuple[ASGIApp, ConnectionLimits]:
    settings = GatewaySettings.from_env()
    edge = create_edge_app(settings, readiness, {"token": app}, service="token-edge")
    # The edge's upstream is in this process; the room of one upstream pool is kept for the
    # service's own connections (Postgres, Redis, the registry, gRPC callers).
    return edge, fitted_connection_limits(settings, upstream_pools=1)
