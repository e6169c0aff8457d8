"""Limits, timeouts, a broken or missing upstream, and streaming, through the real gateway."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.conftest import STREAM_CHUNK, GatewayFactory, Stack
from tests.gateway.test_app import _raw


async def test_body_over_cap_by_content_length_is_413_before_upstream(
        gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(OTESSE_GATEWAY_MAX_BODY_BYTES="4096") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            api = await client.post("/oauth/revoke", content=b"t=" + b"a" * 5000)
            page = await client.post("/settings/integrations/oauth-apps", content=b"a" * 5000)
            fits = await client.post("/oauth/revoke", content=b"a" * 4096)
    assert (api.status_code, api.json()["error"]) == (413, "invalid_request")
    assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
    assert fits.status_code == 200 and fits.json()["body_bytes"] == 4096
    assert gw.token.hits == ["/oauth/revoke"] and gw.authorize.hits == []


async def test_chunked_body_over_cap_is_413(gateway_factory: GatewayFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"a" * 1024

    async with gateway_factory(OTESSE_GATEWAY_MAX_BODY_BYTES="4096") as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/settings/integrations/oauth-apps", content=chunks())
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")


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


async def test_client_too_slow_with_its_body_is_408(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(OTESSE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS="0.2") as gw:
        # 10 bytes announced, 2 sent, then nothing: the client, not the upstream, is late.
        response = await _raw(gw.url, b"POST /oauth/introspect HTTP/1.1\r\nHost: localhost\r\n"
                                      b"Content-Length: 10\r\n\r\nab")
    assert response.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in response.lower()


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


async def test_streams_a_large_request_body_without_buffering(stack: Stack) -> None:
    total = 3 * 1024 * 1024
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        first = b"f" * STREAM_CHUNK
        digest.update(first)
        yield first
        # The rest is only produced once the upstream has the first chunk: a gateway that
        # waited for the whole body before forwarding would stall here.
        await asyncio.wait_for(stack.authorize.first_chunk_seen.wait(), timeout=5)
        sent = STREAM_CHUNK
        while sent < total:
            chunk = b"r" * min(STREAM_CHUNK, total - sent)
            digest.update(chunk)
            sent += len(chunk)
            yield chunk

    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        response = await client.post("/settings/integrations/oauth-apps", content=body())
    assert response.status_code == 200
    assert response.json()["body_bytes"] == total
    assert response.json()["body_sha256"] == digest.hexdigest()


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
