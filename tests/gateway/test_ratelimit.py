"""Rate limits in Redis: per IP on POST /login and /oauth/token, per client on /oauth/token;
failing open (and recovering) when Redis is down or hung."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.gateway.ratelimit import Bucket, RateLimiter
from services.gateway.settings import RateLimit
from tests.conftest import REDIS_URL
from tests.gateway.conftest import GatewayFactory
from tests.proxy import FaultProxy

NO_LIMITS = {"OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "off", "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "off",
             "OTESSE_GATEWAY_RATE_TOKEN_PER_CLIENT": "off"}


def _fail_open_count() -> float:
    return REGISTRY.get_sample_value("otesse_gateway_rate_limit_fail_open_total") or 0.0


async def test_token_endpoint_limited_per_ip(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**{**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "3/60"}) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            statuses = [(await client.post("/oauth/token", data={"grant_type": "x"})).status_code
                        for _ in range(3)]
            limited = await client.post("/oauth/token", data={"grant_type": "x"})
            # Only POST /oauth/token counts: discovery is never limited.
            metadata = await client.get("/.well-known/oauth-authorization-server")
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"] == "too_many_requests"
    assert limited.json()["error_description"]
    assert limited.headers["cache-control"] == "no-store"
    assert 1 <= int(limited.headers["retry-after"]) <= 20  # one request refills every 20 s
    assert metadata.status_code == 200
    assert gw.token.hits.count("/oauth/token") == 3


async def test_per_ip_limit_uses_the_forwarded_client(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**{**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "1/60"}) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            first = await client.post("/oauth/token", headers={"X-Forwarded-For": "203.0.113.1"})
            again = await client.post("/oauth/token", headers={"X-Forwarded-For": "203.0.113.1"})
            other = await client.post("/oauth/token", headers={"X-Forwarded-For": "203.0.113.2"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 429, 200)


async def test_token_endpoint_limited_per_client_however_it_is_named(
        gateway_factory: GatewayFactory) -> None:
    client_a, client_b = "otesse_ci_" + secrets.token_hex(8), "otesse_ci_" + secrets.token_hex(8)
    basic = base64.b64encode(f"{client_a}:otesse_cs_secret".encode()).decode()
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_CLIENT": "2/60"}
    async with gateway_factory(**env) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            form = await client.post("/oauth/token", data={"client_id": client_a, "code": "c1"})
            as_json = await client.post("/oauth/token", json={"client_id": client_a, "code": "c"})
            by_basic = await client.post("/oauth/token", data={"grant_type": "refresh_token"},
                                         headers={"Authorization": f"Basic {basic}"})
            other = await client.post("/oauth/token", json={"client_id": client_b})
    assert (form.status_code, as_json.status_code) == (200, 200)
    assert by_basic.status_code == 429 and by_basic.json()["error"] == "too_many_requests"
    assert other.status_code == 200
    # The body read for the client id is still forwarded whole.
    assert form.json()["body_bytes"] == len(f"client_id={client_a}&code=c1")
    assert as_json.json()["body_bytes"] > 0


async def test_login_posts_limited_per_ip_with_a_page(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**{**NO_LIMITS, "OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "2/60"}) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            posts = [await client.post("/login", data={"email": "a@b.c", "password": "x"})
                     for _ in range(3)]
            pages = [(await client.get("/login")).status_code for _ in range(4)]
    assert [p.status_code for p in posts] == [200, 200, 429]
    assert posts[2].headers["content-type"].startswith("text/html")
    assert "Too many attempts" in posts[2].text
    assert int(posts[2].headers["retry-after"]) >= 1
    assert pages == [200] * 4


async def test_bucket_refills_with_time(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(**{**NO_LIMITS,
                                  "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "1/1"}) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            first = await client.post("/oauth/token")
            denied = await client.post("/oauth/token")
            await asyncio.sleep(1.05)
            later = await client.post("/oauth/token")
    assert (first.status_code, denied.status_code, later.status_code) == (200, 429, 200)
    assert denied.headers["retry-after"] == "1"


async def test_concurrent_requests_never_exceed_the_limit(redis_prefix: str) -> None:
    """The check-and-take is atomic: 50 simultaneous requests on a 10-request bucket → 10."""
    client = aioredis.Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, prefix=f"{redis_prefix}race{secrets.token_hex(4)}:",
                          timeout=5.0)
    bucket = [Bucket("token_ip", "198.51.100.9", RateLimit(10, 3600))]
    try:
        decisions = await asyncio.gather(*(limiter.take(bucket) for _ in range(50)))
    finally:
        await client.aclose()
    assert sum(d.allowed for d in decisions) == 10
    assert {d.limit for d in decisions if not d.allowed} == {"token_ip"}


async def test_a_denied_request_takes_from_no_bucket(redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    limiter = RateLimiter(client, prefix=f"{redis_prefix}none{secrets.token_hex(4)}:",
                          timeout=5.0)
    per_ip = Bucket("token_ip", "198.51.100.10", RateLimit(2, 3600))
    per_client = Bucket("token_client", "otesse_ci_x", RateLimit(1, 3600))
    try:
        assert (await limiter.take([per_ip, per_client])).allowed
        denied = await limiter.take([per_ip, per_client])
        # The client's bucket was empty, so the IP's second request is still there.
        assert (await limiter.take([per_ip])).allowed
    finally:
        await client.aclose()
    assert (denied.allowed, denied.limit) == (False, "token_client")


@pytest_asyncio.fixture
async def redis_proxy() -> AsyncIterator[FaultProxy]:
    target = urlsplit(REDIS_URL)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.cut()


async def test_redis_down_fails_open_then_recovers(gateway_factory: GatewayFactory,
                                                   redis_proxy: FaultProxy,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "2/60",
           "OTESSE_REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/0"}
    async with gateway_factory(**env) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            before = _fail_open_count()
            await redis_proxy.cut()
            with caplog.at_level(logging.INFO, logger="otesse.gateway.ratelimit"):
                down = [(await client.post("/oauth/token")).status_code for _ in range(4)]
                opened = _fail_open_count() - before
                await redis_proxy.restore()
                # Redis is asked again one second after the last failure.
                await asyncio.sleep(1.05)
                up = [(await client.post("/oauth/token")).status_code for _ in range(3)]
    assert down == [200] * 4  # over the limit, but Redis cannot count: fail open
    assert opened == 4
    assert up == [200, 200, 429]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failing open" in m for m in messages) == 1  # logged once, not per request
    assert any("resumed" in m for m in messages)


async def test_hung_redis_fails_open_quickly(gateway_factory: GatewayFactory) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "1/60",
           "OTESSE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "OTESSE_GATEWAY_RATE_REDIS_TIMEOUT_SECONDS": "0.1"}
    try:
        async with gateway_factory(**env) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                started = time.monotonic()
                response = await client.post("/oauth/token")
                elapsed = time.monotonic() - started
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
    assert response.status_code == 200
    assert elapsed < 1.0
