"""The routing table: which upstream answers a public path (DESIGN §4).

``/oauth/token``, ``/oauth/revoke``, ``/oauth/introspect`` and ``/.well-known/*`` go to the token
service and are API paths (errors as JSON); everything else goes to the authorize service and is
a browser path (errors as an HTML page). The upstreams' own ``/healthz``, ``/readyz`` and
``/metrics`` are never routed: the gateway answers 404 for them.

The decision is made on the decoded path, and the raw path is forwarded unchanged. A path with
``.`` or ``..`` segments is refused, because the upstream HTTP client would collapse them
(RFC 3986 §5.2.4) and ``/x/../metrics`` would otherwise reach a path the table refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Upstream = Literal["authorize", "token"]
# What the rate limiter counts for a route, if anything.
RateClass = Literal["login", "token"]

INTERNAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TOKEN_PATHS = frozenset({"/oauth/token", "/oauth/revoke", "/oauth/introspect"})
WELL_KNOWN_PREFIX = "/.well-known/"


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    # The bounded label used in metrics (never the raw path).
    path: str
    # API paths answer errors in JSON; browser paths with an HTML page.
    api: bool
    rate_class: RateClass | None = None


class NotRouted(Exception):
    """The path is not served publicly (404)."""


class MalformedPath(Exception):
    """The path has dot segments or is not absolute (400)."""


_TOKEN = {path: Route("token", path, api=True) for path in TOKEN_PATHS}
_TOKEN_EXCHANGE = Route("token", "/oauth/token", api=True, rate_class="token")
_WELL_KNOWN = Route("token", "/.well-known/*", api=True)
_LOGIN_POST = Route("authorize", "/login", api=False, rate_class="login")
_AUTHORIZE = Route("authorize", "/*", api=False)


def is_api_path(path: str) -> bool:
    """Whether errors for ``path`` are JSON; usable before the path is validated."""
    return path in TOKEN_PATHS or path.startswith(WELL_KNOWN_PREFIX)


def resolve(method: str, path: str) -> Route:
    """The route for a decoded request path; raises :class:`NotRouted` / :class:`MalformedPath`."""
    if not path.startswith("/"):
        raise MalformedPath(path)
    segments = path.split("/")
    if "." in segments or ".." in segments or "\\" in path:
        raise MalformedPath(path)
    if path in INTERNAL_PATHS:
        raise NotRouted(path)
    if path == "/oauth/token" and method == "POST":
        return _TOKEN_EXCHANGE
    if path in _TOKEN:
        return _TOKEN[path]
    if path.startswith(WELL_KNOWN_PREFIX):
        return _WELL_KNOWN
    if path == "/login" and method == "POST":
        return _LOGIN_POST
    return _AUTHORIZE
