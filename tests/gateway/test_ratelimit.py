"""The gateway's rate limits in Redis: per address on POST /login and /oauth/token, and per
address on failed client authentications at the token endpoints (charged when the token
service says so, checked before forwarding); failing open (and recovering) when Redis is down
or hung. The gateway never charges a client: it parses no body."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from tests.conftest import REDIS_URL
from tests.faults.stores import PrivateRedis
from tests.gateway.conftest import GatewayFactory
from tests.proxy import FaultProxy

NO_LIMITS = {"OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "off", "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "off",
             "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "off"}


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


async def test_naming_a_client_costs_that_client_nothing_at_the_gateway(
        gateway_factory: GatewayFactory) -> None:
    """Requests that name the same client in every way a body or header can, from one address
    under its own limit, all reach the token service: only it may charge a client, once it has
    authenticated it."""
    basic = base64.b64encode(b"otesse_ci_victim:otesse_cs_guess").decode()
    async with gateway_factory(**{**NO_LIMITS,
                                  "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "100/60"}) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            statuses = []
            for _ in range(10):
                statuses += [
                    (await client.post("/oauth/token", data={"client_id": "otesse_ci_victim"})
                     ).status_code,
                    (await client.post("/oauth/token", json={"client_id": "otesse_ci_victim"})
                     ).status_code,
                    (await client.post("/oauth/token", data={"grant_type": "refresh_token"},
                                       headers={"Authorization": f"Basic {basic}"})
                     ).status_code]
    assert statuses == [200] * 30
    assert gw.token.hits.count("/oauth/token") == 30


AUTH_FAILED = {"x-test-action": "auth-failed"}


async def test_failed_client_authentications_are_charged_to_the_address(
        gateway_factory: GatewayFactory) -> None:
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "3/60"}
    attacker, other = {"X-Forwarded-For": "203.0.113.20"}, {"X-Forwarded-For": "203.0.113.21"}
    async with gateway_factory(**env) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            failures = [await client.post(path, headers={**attacker, **AUTH_FAILED})
                        for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect")]
            hits = len(gw.token.hits)
            # The address is over its failures: refused before the token service, whatever
            # the endpoint and whether or not this request would have failed too.
            refused = [await client.post(path, headers=attacker)
                       for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect")]
            refused_hits = len(gw.token.hits) - hits
            # Discovery and the authorize side are not client-authenticated: never refused.
            jwks = await client.get("/.well-known/jwks.json", headers=attacker)
            elsewhere = await client.post("/oauth/token", headers=other)
    assert [r.status_code for r in failures] == [401, 401, 401]
    # The mark is the gateway's to read: the client never sees it.
    assert all("x-otesse-client-auth" not in r.headers for r in failures)
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert {r.json()["error"] for r in refused} == {"too_many_requests"}
    assert all(1 <= int(r.headers["retry-after"]) <= 20 for r in refused)
    assert refused_hits == 0
    assert jwks.status_code == 200
    assert elsewhere.status_code == 200


async def test_answers_not_marked_as_failed_authentication_cost_nothing(
        gateway_factory: GatewayFactory) -> None:
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "2/60"}
    async with gateway_factory(**env) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            statuses = [(await client.post("/oauth/token")).status_code for _ in range(10)]
    assert statuses == [200] * 10


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


async def test_the_limits_count_on_their_own_redis_when_given_one(
        gateway_factory: GatewayFactory, private_redis: PrivateRedis) -> None:
    """``OTESSE_RATE_LIMIT_REDIS_URL``: the buckets live there, none on the shared Redis."""
    env = {**NO_LIMITS, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "2/60",
           "OTESSE_RATE_LIMIT_REDIS_URL": private_redis.url}
    async with gateway_factory(**env) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            statuses = [(await client.post("/oauth/token")).status_code for _ in range(3)]
        prefix = gw.settings.stores.redis_prefix
    assert statuses == [200, 200, 429]
    own, shared = aioredis.Redis.from_url(private_redis.url), aioredis.Redis.from_url(REDIS_URL)
    try:
        assert [key async for key in own.scan_iter(match=f"{prefix}gateway:rate:token_ip:*")]
        assert not [key async for key in shared.scan_iter(match=f"{prefix}*")]
    finally:
        await own.aclose()
        await shared.aclose()
