"""The gateway's small parts, table-driven: host matching, claimed client ids, hop-by-hop
stripping and the routing table."""

from __future__ import annotations

import base64

import pytest

from services.gateway import client_identity, hop_by_hop, routing
from services.gateway.hosts import HostAllowList, HostNotAllowed, MissingHost, split_host


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


def _basic(text: str) -> bytes:
    return b"Basic " + base64.b64encode(text.encode())


@pytest.mark.parametrize(("authorization", "content_type", "body", "expected"), [
    (_basic("otesse_ci_a:secret"), None, b"", "otesse_ci_a"),
    (_basic("otesse_ci_a%3Ab:secret"), None, b"", "otesse_ci_a:b"),
    (b"Basic !!!", b"application/json", b'{"client_id": "otesse_ci_b"}', "otesse_ci_b"),
    (_basic("no-colon"), None, b"", None),
    (b"Bearer x", b"application/x-www-form-urlencoded", b"client_id=otesse_ci_c&code=1",
     "otesse_ci_c"),
    (None, b"application/json; charset=utf-8", b'{"client_id": "otesse_ci_d"}', "otesse_ci_d"),
    (None, b"application/json", b'{"client_id": 7}', None),
    (None, b"application/json", b"[1, 2]", None),
    (None, b"application/json", b"{not json", None),
    (None, b"application/json", b"[" * 100000, None),
    (None, b"application/json", b'{"client_id": "' + b"x" * 300 + b'"}', None),
    (None, b"text/plain", b"client_id=otesse_ci_e", None),
    (None, b"application/x-www-form-urlencoded", b"\xff\xfe", None),
], ids=["basic", "basic-form-encoded", "bad-basic-then-json", "basic-without-colon",
        "bearer-then-form", "json-with-charset", "json-number", "json-array", "broken-json",
        "deeply-nested-json", "overlong-id", "other-media-type", "form-not-utf8"])
def test_claimed_client_id(authorization: bytes | None, content_type: bytes | None, body: bytes,
                           expected: str | None) -> None:
    assert client_identity.claimed_client_id(authorization, content_type, body) == expected


def test_hop_by_hop_strips_listed_and_named_fields() -> None:
    headers = [(b"connection", b"close, X-Named"), (b"x-named", b"1"), (b"te", b"trailers"),
               (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"x-kept", b"1"),
               (b"proxy-connection", b"keep-alive")]
    assert hop_by_hop.strip(headers, also=frozenset({b"x-other"})) == [(b"x-kept", b"1")]


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/oauth/token", ("token", "/oauth/token", True, "token")),
    ("GET", "/oauth/token", ("token", "/oauth/token", True, None)),
    ("POST", "/oauth/revoke", ("token", "/oauth/revoke", True, None)),
    ("GET", "/.well-known/jwks.json", ("token", "/.well-known/*", True, None)),
    ("POST", "/login", ("authorize", "/login", False, "login")),
    ("GET", "/login", ("authorize", "/*", False, None)),
    ("GET", "/.well-known", ("authorize", "/*", False, None)),
], ids=["token-post", "token-get", "revoke", "well-known", "login-post", "login-get",
        "well-known-bare"])
def test_routing_table(method: str, path: str, expected: tuple[str, str, bool, str | None],
                       ) -> None:
    route = routing.resolve(method, path)
    assert (route.upstream, route.path, route.api, route.rate_class) == expected


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
