"""The gateway's small parts, table-driven: host matching, hop-by-hop stripping, the routing
table, requests in flight per address and the upload budget."""

from __future__ import annotations

import pytest

from services.gateway import hop_by_hop, routing
from services.gateway.body import BodyBudget
from services.gateway.errors import TooManyInFlight
from services.gateway.hosts import HostAllowList, HostNotAllowed, MissingHost, split_host
from services.gateway.in_flight import InFlight


@pytest.mark.parametrize(("value", "expected"), [
    ("example.com", ("example.com", None)),
    ("Example.COM:8000", ("example.com", "8000")),
    ("[::1]:8000", ("[::1]", "8000")),
    ("[::1]", ("[::1]", None)),
    ("example.com:", ("example.com:", None)),
    ("example.com:http", ("example.com:http", None)),
], ids=["name", "name-port", "ipv6-port", "ipv6", "empty-port", "named-port"])
def test_split_host(value: str, expected: tuple[str, str | None]) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(("host", "error"), [
    (None, MissingHost),
    (b"", MissingHost),
    (b"evil.example", HostNotAllowed),
    (b"auth.otesse.com.evil.example", HostNotAllowed),
    (b"localhost:9000", HostNotAllowed),
    (b"auth.otesse.com@evil.example", HostNotAllowed),
], ids=["absent", "empty", "unknown", "suffix", "other-port-of-exact-entry", "userinfo-trick"])
def test_host_allow_list_refuses(host: bytes | None, error: type[Exception]) -> None:
    hosts = HostAllowList.of(("auth.otesse.com", "localhost:8000"))
    with pytest.raises(error):
        hosts.check(host)


def test_host_allow_list_accepts() -> None:
    hosts = HostAllowList.of(("auth.otesse.com", "localhost:8000"))
    assert hosts.check(b"AUTH.otesse.com") == "auth.otesse.com"
    assert hosts.check(b"auth.otesse.com:443") == "auth.otesse.com:443"
    assert hosts.check(b"localhost:8000") == "localhost:8000"


def test_hop_by_hop_strips_listed_and_named_fields() -> None:
    headers = [(b"connection", b"close, X-Named"), (b"x-named", b"1"), (b"te", b"trailers"),
               (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"x-kept", b"1"),
               (b"proxy-connection", b"keep-alive")]
    assert hop_by_hop.strip(headers, also=frozenset({b"x-other"})) == [(b"x-kept", b"1")]


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/oauth/token", ("token", "/oauth/token", True, "token", "token")),
    ("GET", "/oauth/token", ("token", "/oauth/token", True, "token", None)),
    ("POST", "/oauth/revoke", ("token", "/oauth/revoke", True, "token", "client_auth")),
    ("POST", "/oauth/introspect", ("token", "/oauth/introspect", True, "token", "client_auth")),
    ("GET", "/.well-known/jwks.json", ("token", "/.well-known/*", True, "token", None)),
    ("POST", "/login", ("authorize", "/login", False, "form", "login")),
    ("GET", "/login", ("authorize", "/*", False, "form", None)),
    ("POST", "/logout", ("authorize", "/*", False, "form", None)),
    ("POST", "/settings/integrations/oauth-apps/new",
     ("authorize", "/settings/integrations/oauth-apps/*", False, "upload", None)),
    ("POST", "/settings/integrations/oauth-apps/otesse_ci_abc",
     ("authorize", "/settings/integrations/oauth-apps/*", False, "upload", None)),
    ("POST", "/settings/integrations/oauth-apps/otesse_ci_abc/delete",
     ("authorize", "/*", False, "form", None)),
    ("POST", "/settings/integrations/oauth-apps/", ("authorize", "/*", False, "form", None)),
    ("GET", "/settings/integrations/oauth-apps/new", ("authorize", "/*", False, "form", None)),
    ("GET", "/.well-known", ("authorize", "/*", False, "form", None)),
], ids=["token-post", "token-get", "revoke", "introspect", "well-known", "login-post",
        "login-get", "logout", "register-app-upload", "edit-app-upload", "delete-app-form",
        "apps-list-post", "register-app-get", "well-known-bare"])
def test_routing_table(method: str, path: str,
                       expected: tuple[str, str, bool, str, str | None]) -> None:
    route = routing.resolve(method, path)
    assert (route.upstream, route.path, route.api, route.body, route.rate_class) == expected


@pytest.mark.parametrize(("path", "error"), [
    ("/healthz", routing.NotRouted),
    ("/metrics", routing.NotRouted),
    ("/readyz", routing.NotRouted),
    ("relative", routing.MalformedPath),
    ("/a/./b", routing.MalformedPath),
    ("/a/..", routing.MalformedPath),
    ("/a\\b", routing.MalformedPath),
], ids=["healthz", "metrics", "readyz", "relative", "dot", "trailing-dot-dot", "backslash"])
def test_routing_refuses(path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        routing.resolve("GET", path)


def test_requests_in_flight_are_capped_per_address() -> None:
    in_flight = InFlight(2)
    with in_flight.hold("192.0.2.1"), in_flight.hold("192.0.2.1"):
        with pytest.raises(TooManyInFlight), in_flight.hold("192.0.2.1"):
            pass
        with in_flight.hold("192.0.2.2"):
            assert len(in_flight) == 2
    # Every hold is given back, an error or not: nothing is left counted.
    assert len(in_flight) == 0
    with in_flight.hold("192.0.2.1"), in_flight.hold("192.0.2.1"):
        pass


def test_the_upload_budget_is_drawn_and_given_back() -> None:
    budget = BodyBudget(10)
    assert budget.draw(6) and budget.draw(4)
    assert not budget.draw(1)
    budget.give_back(4)
    assert budget.draw(3) and budget.held == 9
