"""The gateway's routing table, host check, request ids and headers, against real upstreams."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gateway.conftest import GatewayFactory, Stack


def _headers(answer: dict[str, Any]) -> dict[str, str]:
    return dict(answer["headers"])


async def _raw(url: str, request: bytes) -> bytes:
    """Sends bytes as they are (for requests httpx refuses to make) and reads the answer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), timeout=5)
    writer.close()
    return data


@pytest.mark.parametrize(("method", "path", "upstream"), [
    ("POST", "/oauth/token", "token"),
    ("POST", "/oauth/revoke", "token"),
    ("POST", "/oauth/introspect", "token"),
    ("GET", "/.well-known/oauth-authorization-server", "token"),
    ("GET", "/.well-known/jwks.json", "token"),
    ("GET", "/oauth/authorize", "authorize"),
    ("GET", "/login", "authorize"),
    ("POST", "/login", "authorize"),
    ("GET", "/settings/integrations/oauth-apps", "authorize"),
    ("GET", "/", "authorize"),
    ("GET", "/oauth/tokens", "authorize"),
], ids=lambda v: str(v))
async def test_routes_each_path_to_its_upstream(stack: Stack, method: str, path: str,
                                                upstream: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.request(method, path)
    assert response.status_code == 200
    assert response.json()["upstream"] == upstream
    assert response.json()["path"] == path


async def test_forwards_raw_path_and_query_unchanged(stack: Stack) -> None:
    target = "/oauth/authorize?client_id=a%20b&scope=bookings%3Aread+customers%3Aread&x=%2F"
    async with httpx.AsyncClient(base_url=stack.url) as client:
        answer = (await client.get(target)).json()
    assert answer["raw_path"] == "/oauth/authorize"
    assert answer["query"] == target.partition("?")[2]


@pytest.mark.parametrize("target", [
    "/healthz", "/readyz", "/metrics", "/metrics?format=x", "/%6detrics", "/%68ealthz",
], ids=["healthz", "readyz", "metrics", "metrics-query", "metrics-percent-encoded",
        "healthz-percent-encoded"])
async def test_never_routes_upstream_health_or_metrics(stack: Stack, target: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get(target)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert stack.authorize.hits == [] and stack.token.hits == []


@pytest.mark.parametrize("target", [
    "/./metrics", "/x/../metrics", "/%2e%2e/metrics", "/oauth/%2E/token", "/a\\..\\metrics",
], ids=["dot", "dot-dot", "encoded-dot-dot", "encoded-dot", "backslash"])
async def test_refuses_dot_segments_that_would_reach_a_hidden_path(stack: Stack,
                                                                   target: str) -> None:
    response = await _raw(stack.url, f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
                                     "Connection: close\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 400 ")
    assert stack.authorize.hits == [] and stack.token.hits == []


@pytest.mark.parametrize("host", [
    "localhost", "localhost:8000", "LOCALHOST:8000", "127.0.0.1", "127.0.0.1:1234",
], ids=["name", "name-port", "upper-case", "ip", "ip-port"])
async def test_accepts_allowed_hosts_with_or_without_port(stack: Stack, host: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/oauth/authorize", headers={"Host": host})
    assert response.status_code == 200
    assert _headers(response.json())["x-forwarded-host"] == host


@pytest.mark.parametrize(("host", "path", "json_body"), [
    ("evil.example", "/oauth/token", True),
    ("localhost.evil.example", "/oauth/token", True),
    ("evil.example:8000", "/oauth/authorize", False),
    ("[::1]:8000", "/", False),
], ids=["unknown-api", "suffix-trick", "unknown-browser", "unlisted-ipv6"])
async def test_rejects_unknown_hosts_with_421(stack: Stack, host: str, path: str,
                                             json_body: bool) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.post(path, headers={"Host": host})
    assert response.status_code == 421
    if json_body:
        assert response.json()["error"] == "invalid_request"
    else:
        assert response.headers["content-type"].startswith("text/html")
    assert stack.authorize.hits == [] and stack.token.hits == []


@pytest.mark.parametrize("request_head", [
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
], ids=["missing-host", "two-hosts"])
async def test_malformed_host_is_400(stack: Stack, request_head: bytes) -> None:
    response = await _raw(stack.url, request_head)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert stack.authorize.hits == []


async def test_configured_host_list_replaces_the_defaults(gateway_factory: GatewayFactory,
                                                          ) -> None:
    async with gateway_factory(OTESSE_GATEWAY_ALLOWED_HOSTS="auth.otesse.com,[::1]:8000") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            public = await client.get("/", headers={"Host": "auth.otesse.com"})
            v6 = await client.get("/", headers={"Host": "[::1]:8000"})
            v6_other_port = await client.get("/", headers={"Host": "[::1]:9000"})
            local = await client.get("/", headers={"Host": "localhost"})
    assert (public.status_code, v6.status_code) == (200, 200)
    assert (v6_other_port.status_code, local.status_code) == (421, 421)


@pytest.mark.parametrize(("sent", "kept"), [
    ("req-123_abc.DEF:9", True),
    ("has spaces in it", False),
    ("x" * 200, False),
    (None, False),
], ids=["well-formed-kept", "spaces-replaced", "too-long-replaced", "absent-created"])
async def test_request_id_reaches_upstream_and_comes_back(stack: Stack, sent: str | None,
                                                          kept: bool) -> None:
    headers = {"X-Request-ID": sent} if sent else {}
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/oauth/authorize", headers=headers)
    returned = response.headers.get_list("x-request-id")
    assert len(returned) == 1  # the upstream's own copy is not passed on as well
    assert _headers(response.json())["x-request-id"] == returned[0]
    assert (returned[0] == sent) is kept
    assert returned[0] != "upstream-must-not-leak"


async def test_error_answers_carry_request_id_and_nosniff(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/metrics", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-me"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_strips_hop_by_hop_headers_both_ways(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/oauth/authorize", headers={
            "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5", "TE": "trailers", "Proxy-Authorization": "Basic eDp5",
            "Upgrade": "websocket", "X-Ordinary": "kept", "x-test-action": "hop"})
    seen = _headers(response.json())
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen, name
    assert seen["x-ordinary"] == "kept"
    assert "x-up-hop" not in response.headers and "keep-alive" not in response.headers
    assert response.headers["x-up-kept"] == "1"


async def test_internal_fields_never_pass_the_gateway(stack: Stack) -> None:
    """A client cannot speak for a service (``x-otesse-…`` request fields are dropped), nor read
    what a service tells the gateway (dropped from answers too)."""
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.post("/oauth/token", headers={
            "X-Otesse-Client-Auth": "ok", "x-otesse-anything": "forged",
            "x-test-action": "internal"})
    assert response.status_code == 200
    assert not [name for name in _headers(response.json()) if name.startswith("x-otesse-")]
    assert not [name for name in response.headers if name.lower().startswith("x-otesse-")]


@pytest.mark.parametrize(("connection", "path", "json_body"), [
    ("host", "/settings/authorized-apps/", False),
    ("keep-alive, HOST", "/login", False),
    ("content-length", "/oauth/token", True),
    ("x-request-id", "/oauth/token", True),
    ("x-forwarded-for", "/oauth/authorize", False),
], ids=["fails because it would strip Host", "fails because it would strip Host (listed)",
        "fails because it would strip Content-Length", "fails because it would strip the "
        "request id", "fails because it would strip the forwarded address"])
async def test_connection_may_not_strip_what_the_request_needs(
        stack: Stack, connection: str, path: str, json_body: bool) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.post(path, content=b"a=1", headers={"Connection": connection})
    assert response.status_code == 400
    if json_body:
        assert response.json()["error"] == "invalid_request"
    else:
        assert "Connection header" in response.text
    assert stack.authorize.hits == [] and stack.token.hits == []


async def test_passes_every_set_cookie_and_keeps_none(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        first = await client.get("/login", headers={"x-test-action": "cookies"})
    assert sorted(first.headers.get_list("set-cookie")) == ["a=1; Path=/; HttpOnly",
                                                            "b=2; Path=/"]
    # A different client (no cookie jar of its own) must not be sent the first one's cookies.
    async with httpx.AsyncClient(base_url=stack.url) as other:
        second = await other.get("/login")
    assert "cookie" not in _headers(second.json())


async def test_cookies_and_authorization_pass_through(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        answer = (await client.post("/oauth/token", headers={
            "Cookie": "otesse_session=abc", "Authorization": "Basic Y2k6Y3M="})).json()
    assert _headers(answer)["cookie"] == "otesse_session=abc"
    assert _headers(answer)["authorization"] == "Basic Y2k6Y3M="


@pytest.mark.parametrize(("proxies", "sent", "client_ip", "proto"), [
    ("127.0.0.0/8", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
     "203.0.113.7", "https"),
    ("127.0.0.0/8", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}, "203.0.113.7", "http"),
    ("127.0.0.0/8,10.0.0.0/8", {"X-Forwarded-For": "203.0.113.7, 10.1.2.3"},
     "203.0.113.7", "http"),
    ("127.0.0.0/8,10.0.0.0/8", {"X-Forwarded-For": "10.9.9.9, 10.1.2.3"}, "10.9.9.9", "http"),
    ("127.0.0.0/8", {"X-Forwarded-For": "203.0.113.7, not-an-ip"}, "127.0.0.1", "http"),
    ("127.0.0.0/8", {"X-Forwarded-Proto": "gopher"}, "127.0.0.1", "http"),
    ("127.0.0.0/8", {}, "127.0.0.1", "http"),
    ("10.0.0.0/8", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
     "127.0.0.1", "http"),
], ids=["trusted-peer-believed", "spoofed-left-entries-dropped", "trusted-hops-skipped",
        "all-trusted-left-most-is-client", "garbage-stops-the-walk", "bad-proto-ignored",
        "no-header-peer-is-client", "untrusted-peer-ignored"])
async def test_forwarded_headers_trusted_only_from_proxies(
        gateway_factory: GatewayFactory, proxies: str, sent: dict[str, str], client_ip: str,
        proto: str) -> None:
    async with gateway_factory(OTESSE_GATEWAY_TRUSTED_PROXIES=proxies) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/oauth/authorize", headers={
                **sent, "Forwarded": "for=192.0.2.66", "X-Real-IP": "192.0.2.66"})
    seen = _headers(response.json())
    assert seen["x-forwarded-for"] == client_ip
    assert seen["x-forwarded-proto"] == proto
    assert "forwarded" not in seen and "x-real-ip" not in seen
    assert ("strict-transport-security" in response.headers) is (proto == "https")


async def test_hsts_and_nosniff_on_https(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/", headers={"X-Forwarded-Proto": "https"})
        plain = await client.get("/")
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"


async def test_refuses_websocket_upgrades(stack: Stack) -> None:
    response = await _raw(stack.url, b"GET /login HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                     b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 403 ")
    assert stack.authorize.hits == []
