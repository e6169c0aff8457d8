"""The routing table: which upstream answers a public path (DESIGN §4).

``/oauth/token``, ``/oauth/revoke``, ``/oauth/introspect`` and ``/.well-known/*`` go to the token
service and are API paths (errors as JSON); everything else goes to the authorize service and is
a browser path (errors as an HTML page). The upstreams' own ``/healthz``, ``/readyz`` and
``/metrics`` are never routed: the gateway answers 404 for them.

Each route also says which body cap applies (``token``: the token service's endpoints; ``upload``:
the two app-registration forms that carry a logo; ``form``: everything else) and what the rate
limiter counts for it (``login``: sign-in attempts per address; ``token``: token requests per
address; ``client_auth``: nothing is taken, but an address over its client-authentication
failures is refused — ``token`` checks that too).

The decision is made on the decoded path, and the raw path is forwarded unchanged (the upstream
client sends it byte for byte). A path with ``.`` or ``..`` segments (``%2e`` included) is
refused all the same: any hop that resolves dot segments as RFC 3986 §5.2.4 describes (an
upstream framework, a proxy added in front of a service) would turn ``/x/../metrics`` into a
path this table refuses, and such a path has no legitimate use here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Upstream = Literal["authorize", "token"]
# What the rate limiter counts for a route, if anything.
RateClass = Literal["login", "token", "client_auth"]
# Which body cap applies.
BodyClass = Literal["token", "form", "upload"]

INTERNAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TOKEN_PATHS = frozenset({"/oauth/token", "/oauth/revoke", "/oauth/introspect"})
WELL_KNOWN_PREFIX = "/.well-known/"
# POST here/new (Register App) and here/<client_id> (Edit app) upload a logo.
APPS_PREFIX = "/settings/integrations/oauth-apps/"


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    # The bounded label used in metrics (never the raw path).
    path: str
    # API paths answer errors in JSON; browser paths with an HTML page.
    api: bool
    body: BodyClass
    rate_class: RateClass | None = None


class NotRouted(Exception):
    """The path is not served publicly (404)."""


class MalformedPath(Exception):
    """The path has dot segments or is not absolute (400)."""


_TOKEN = {path: Route("token", path, api=True, body="token") for path in TOKEN_PATHS}
_CLIENT_AUTHENTICATED = {
    path: Route("token", path, api=True, body="token",
                rate_class="token" if path == "/oauth/token" else "client_auth")
    for path in TOKEN_PATHS}
_WELL_KNOWN = Route("token", "/.well-known/*", api=True, body="token")
_LOGIN_POST = Route("authorize", "/login", api=False, body="form", rate_class="login")
_UPLOAD = Route("authorize", APPS_PREFIX + "*", api=False, body="upload")
_AUTHORIZE = Route("authorize", "/*", api=False, body="form")


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
    if path in _TOKEN:
        return _CLIENT_AUTHENTICATED[path] if method == "POST" else _TOKEN[path]
    if path.startswith(WELL_KNOWN_PREFIX):
        return _WELL_KNOWN
    if method == "POST":
        if path == "/login":
            return _LOGIN_POST
        app = path.removeprefix(APPS_PREFIX)
        if app != path and app and "/" not in app:
            return _UPLOAD
    return _AUTHORIZE
