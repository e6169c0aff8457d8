"""Body caps per route, timeouts, a broken or missing upstream, bodies read whole before an
upstream is asked, and streamed answers, through the real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.conftest import GatewayFactory, Stack
from tests.gateway.test_app import _raw


@pytest.mark.parametrize(("method", "path", "cap", "json_body"), [
    ("POST", "/oauth/token", 16 * 1024, True),
    ("POST", "/oauth/revoke", 16 * 1024, True),
    ("POST", "/oauth/introspect", 16 * 1024, True),
    ("GET", "/.well-known/jwks.json", 16 * 1024, True),
    ("POST", "/login", 64 * 1024, False),
    ("POST", "/logout", 64 * 1024, False),
    ("POST", "/oauth/authorize/decision", 64 * 1024, False),
    ("POST", "/settings/integrations/oauth-apps/new", 1280 * 1024, False),
    ("POST", "/settings/integrations/oauth-apps/otesse_ci_x", 1280 * 1024, False),
], ids=["token", "revoke", "introspect", "well-known", "login", "logout", "consent",
        "register-app-with-logo", "edit-app-with-logo"])
async def test_each_route_takes_bodies_up_to_its_cap(stack: Stack, method: str, path: str,
                                                     cap: int, json_body: bool) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        fits = await client.request(method, path, content=b"a" * cap)
        over = await client.request(method, path, content=b"a" * (cap + 1))
    assert fits.status_code == 200 and fits.json()["body_bytes"] == cap
    assert over.status_code == 413
    if json_body:
        assert over.json()["error"] == "invalid_request"
    else:
        assert over.headers["content-type"].startswith("text/html")
    assert over.headers["connection"] == "close"
    assert (stack.token.hits + stack.authorize.hits) == [path]


async def test_caps_are_configured_per_kind_of_route(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES="2048",
                               OTESSE_GATEWAY_MAX_FORM_BODY_BYTES="4096",
                               OTESSE_GATEWAY_MAX_UPLOAD_BODY_BYTES="8192") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            statuses = [(await client.post(path, content=b"a" * size)).status_code
                        for path, size in [("/oauth/token", 2048), ("/oauth/token", 2049),
                                           ("/login", 4096), ("/login", 4097),
                                           ("/settings/integrations/oauth-apps/new", 8192),
                                           ("/settings/integrations/oauth-apps/new", 8193)]]
    assert statuses == [200, 413, 200, 413, 200, 413]


async def test_chunked_body_over_cap_is_413(gateway_factory: GatewayFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"a" * 1024

    async with gateway_factory(OTESSE_GATEWAY_MAX_FORM_BODY_BYTES="4096") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/oauth/authorize/decision", content=chunks())
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert gw.authorize.hits == []


async def test_a_chunked_body_is_read_whole_and_sent_with_its_length(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"grant_type=", b"refresh_token", b"&refresh_token=abc"):
            yield piece

    async with httpx.AsyncClient(base_url=stack.url) as client:
        answer = (await client.post("/oauth/token", content=chunks())).json()
    seen = dict(answer["headers"])
    assert answer["body_bytes"] == len(b"grant_type=refresh_token&refresh_token=abc")
    assert seen["content-length"] == str(answer["body_bytes"])
    assert "transfer-encoding" not in seen


async def test_uploads_past_the_buffer_budget_are_503_and_others_still_served(
        gateway_factory: GatewayFactory) -> None:
    """The bytes of uploads held at once are bounded, all clients together: past the budget an
    upload is refused (503, retry shortly), and token requests are not affected."""
    async with gateway_factory(OTESSE_GATEWAY_UPLOAD_BUFFER_BYTES="65536") as gw:
        parts = urlsplit(gw.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            # An upload that has sent 60 KiB of its 1 MiB and pauses, holding them.
            writer.write(b"POST /settings/integrations/oauth-apps/new HTTP/1.1\r\n"
                         b"Host: localhost\r\nContent-Length: 1048576\r\n\r\n"
                         + b"a" * 60 * 1024)
            await writer.drain()
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=gw.url) as client:
                second = await client.post("/settings/integrations/oauth-apps/new",
                                           content=b"b" * 8 * 1024)
                token = await client.post("/oauth/token", content=b"c" * 8 * 1024)
        finally:
            writer.transport.abort()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=gw.url) as client:
            later = await client.post("/settings/integrations/oauth-apps/new",
                                      content=b"b" * 8 * 1024)
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "<h1>Temporarily unavailable</h1>" in second.text
    assert token.status_code == 200
    # The budget is given back when the first upload ends (here: its client went away).
    assert later.status_code == 200


@pytest.mark.parametrize(("headers", "status"), [
    ({"X-Big": "a" * 64 * 1024}, 431),
    ({f"X-Many-{i}": "a" * 100 for i in range(200)}, 431),
    ({"Cookie": "s=" + "a" * 20 * 1024}, 431),
], ids=["one-64KiB-header", "many-headers", "huge-cookie"])
async def test_oversized_headers_are_refused_never_500(stack: Stack, headers: dict[str, str],
                                                       status: int) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.post("/oauth/token", headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"
    assert stack.token.hits == []


async def test_overlong_url_is_414(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        response = await client.get("/oauth/authorize?state=" + "a" * 9000)
    assert response.status_code == 414
    assert stack.authorize.hits == []


async def test_content_length_with_chunked_is_refused(stack: Stack) -> None:
    response = await _raw(stack.url, b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\n"
                                     b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
                                     b"Connection: close\r\n\r\n0\r\n\r\n")
    assert response.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 ")
    assert stack.token.hits == []


@pytest.mark.parametrize(("path", "json_body"), [
    ("/oauth/introspect", True), ("/oauth/authorize", False),
], ids=["api-json", "browser-page"])
async def test_slow_upstream_is_504(gateway_factory: GatewayFactory, path: str,
                                   json_body: bool) -> None:
    async with gateway_factory(OTESSE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS="0.2") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post(path, headers={"x-test-action": "slow",
                                                        "x-test-seconds": "1"})
    assert response.status_code == 504
    if json_body:
        assert response.json()["error"] == "temporarily_unavailable"
    else:
        assert "did not answer in time" in response.text


@pytest.mark.parametrize(("path", "json_body"), [
    ("/oauth/token", True), ("/.well-known/jwks.json", True), ("/login", False),
    ("/oauth/authorize", False),
], ids=["token-json", "well-known-json", "login-page", "authorize-page"])
async def test_upstream_down_is_503_json_or_page(gateway_factory: GatewayFactory, path: str,
                                                 json_body: bool) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with gateway_factory(OTESSE_GATEWAY_AUTHORIZE_URL=nowhere,
                               OTESSE_GATEWAY_TOKEN_URL=nowhere) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post(path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    if json_body:
        assert response.json() == {
            "error": "temporarily_unavailable",
            "error_description": "The service is temporarily unavailable; retry shortly."}
    else:
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>Temporarily unavailable</h1>" in response.text
        assert "Traceback" not in response.text


async def test_upstream_that_hangs_up_is_502(gateway_factory: GatewayFactory) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with gateway_factory(OTESSE_GATEWAY_TOKEN_URL=f"http://127.0.0.1:{port}") as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await client.post("/oauth/token", json={"grant_type": "x"})
    finally:
        server.close()
    assert response.status_code == 502
    assert response.json()["error"] == "temporarily_unavailable"


async def test_a_body_is_read_whole_before_an_upstream_is_asked(stack: Stack) -> None:
    """The upstream sees nothing of a request until its whole body has arrived at the edge."""
    arrived = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"token=first-half&"
        await asyncio.sleep(0.3)
        # Had the gateway forwarded the first half already, the upstream would have the request.
        if not stack.token.hits:
            arrived.set()
        yield b"rest=second-half"

    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.post("/oauth/introspect", content=body())
    assert response.status_code == 200
    assert arrived.is_set()
    assert response.json()["body_bytes"] == len(b"token=first-half&rest=second-half")


async def test_streams_a_large_response_body_without_buffering(stack: Stack) -> None:
    total = 8 * 1024 * 1024
    received = 0
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        async with client.stream("GET", "/oauth/authorize", headers={
                "x-test-action": "stream-out", "x-test-bytes": str(total)}) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                received += len(chunk)
                # The upstream sends the rest only after we hold the first chunk.
                stack.authorize.client_has_first_chunk.set()
    assert received == total


async def test_keeps_upstream_connections_alive(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        answers = [(await client.get("/oauth/authorize")).json() for _ in range(5)]
    # Sequential requests share one pooled upstream connection: one source port.
    assert len({answer["peer_port"] for answer in answers}) == 1
