"""The per-client budget of POST /oauth/token, charged by authenticated identity only, and the
mark a failed client authentication leaves for the gateway — against the real token service,
registry, Postgres and Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from otesse.auth.v1 import registry_pb2_grpc
from services.common.ratelimit import RateLimit, RateLimiter
from services.common.redis_lean import LeanRedis
from services.common.settings import Secret, StoreSettings
from services.token.client_auth import AuthenticatedClient
from services.token.client_budget import ClientBudget
from services.token.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from tests.faults.stores import PrivateRedis
from tests.token.conftest import (
    VERIFIER,
    Client,
    TokenService,
    exchange,
    issue_code,
    make_settings,
    refresh,
    register_client,
    running,
)

BUDGET = 3


@pytest_asyncio.fixture(scope="module")
async def limited(store_settings: StoreSettings, registry_address: str,
                  redis: aioredis.Redis) -> AsyncIterator[TokenService]:
    """A token service whose clients may make BUDGET token requests a minute."""
    settings = make_settings(store_settings, registry_address,
                             rate_per_client=RateLimit(BUDGET, 60))
    async with running(settings) as service:
        yield service


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def empty_the_bucket_of(redis: aioredis.Redis, prefix: str, client: Client) -> None:
    digest = hashlib.sha256(client.client_id.encode()).hexdigest()[:32]
    await redis.delete(f"{prefix}token:rate:token_client:{digest}")


async def test_an_authenticated_client_is_limited_before_any_side_effect(
        limited: TokenService, registry: registry_pb2_grpc.ClientRegistryAsyncStub,
        redis: aioredis.Redis, redis_prefix: str) -> None:
    client = await register_client(registry)
    answers = [await refresh(limited.http, client, "otesse_rt_made-up") for _ in range(BUDGET)]
    code = await issue_code(redis, redis_prefix, client)
    refused = await exchange(limited.http, client, code)
    assert [a.json()["error"] for a in answers] == ["invalid_grant"] * BUDGET
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["cache-control"] == "no-store"
    assert "x-otesse-client-auth" not in refused.headers
    # The refused exchange consumed nothing: with the budget back, the same code works.
    await empty_the_bucket_of(redis, redis_prefix, client)
    assert (await exchange(limited.http, client, code)).status_code == 200


JUNK: dict[str, Callable[[Client], dict[str, Any]]] = {
    "fails because the client secret is wrong": lambda victim: {
        "json": {"grant_type": "authorization_code", "code": "junk", "redirect_uri": "x",
                 "client_id": victim.client_id, "client_secret": "otesse_cs_guess"}},
    "fails because the Basic secret is wrong": lambda victim: {
        "data": {"grant_type": "refresh_token", "refresh_token": "otesse_rt_junk"},
        "headers": {"Authorization": basic(victim.client_id, "otesse_cs_guess")}},
    "fails because a confidential client sent no secret": lambda victim: {
        "data": {"grant_type": "authorization_code", "code": "junk", "redirect_uri": "x",
                 "client_id": victim.client_id}},
}


async def test_junk_naming_a_client_never_touches_its_budget(
        limited: TokenService, registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    victim = await register_client(registry)
    junk = [await limited.http.post("/oauth/token", **build(victim))
            for build in JUNK.values() for _ in range(5)]
    own = [await refresh(limited.http, victim, "otesse_rt_made-up") for _ in range(BUDGET)]
    assert {(r.status_code, r.json()["error"]) for r in junk} == {(401, "invalid_client")}
    assert [r.json()["error"] for r in own] == ["invalid_grant"] * BUDGET


async def test_public_clients_have_no_budget_of_their_own(
        limited: TokenService, registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    """Naming a public client proves nothing: anyone could spend its budget. It is limited per
    address at the gateway instead."""
    public = await register_client(registry, public=True)
    answers = [await refresh(limited.http, public, "otesse_rt_made-up")
               for _ in range(BUDGET + 3)]
    assert {r.json()["error"] for r in answers} == {"invalid_grant"}


MARKED = {
    "fails because the secret is wrong (token)": (
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": "otesse_rt_x",
                         "client_secret": "otesse_cs_guess"}, 401, "invalid_client", True),
    "fails because the secret is wrong (revoke)": (
        "/oauth/revoke", {"token": "otesse_rt_x", "client_secret": "otesse_cs_guess"}, 401,
        "invalid_client", True),
    "fails because the secret is wrong (introspect)": (
        "/oauth/introspect", {"token": "otesse_rt_x", "client_secret": "otesse_cs_guess"}, 401,
        "invalid_client", True),
    "fails because the grant is wrong, not the client (not a failed authentication)": (
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": "otesse_rt_x",
                         "client_secret": "RIGHT"}, 400, "invalid_grant", False),
    "fails because the request is malformed, not the client": (
        "/oauth/token", {"refresh_token": "otesse_rt_x", "client_secret": "RIGHT"}, 400,
        "invalid_request", False),
}


@pytest.mark.parametrize(("path", "form", "status", "error", "marked"), list(MARKED.values()),
                         ids=list(MARKED))
async def test_a_failed_client_authentication_is_marked_for_the_gateway(
        token: TokenService, client: Client, path: str, form: dict[str, str], status: int,
        error: str, marked: bool) -> None:
    form = {**form, "client_id": client.client_id}
    if form["client_secret"] == "RIGHT":
        form["client_secret"] = client.secret
    response = await token.http.post(path, data=form)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert (response.headers.get("x-otesse-client-auth") == "failed") is marked


async def test_a_public_exchange_is_never_charged(
        limited: TokenService, registry: registry_pb2_grpc.ClientRegistryAsyncStub,
        redis: aioredis.Redis, redis_prefix: str) -> None:
    public = await register_client(registry, public=True)
    for _ in range(BUDGET + 1):
        code = await issue_code(redis, redis_prefix, public, verifier=VERIFIER)
        response = await exchange(limited.http, public, code, code_verifier=VERIFIER)
        assert response.status_code == 200, response.text
    digest = hashlib.sha256(public.client_id.encode()).hexdigest()[:32]
    assert not await redis.exists(f"{redis_prefix}token:rate:token_client:{digest}")


async def test_redis_unanswering_fails_open_and_is_counted(redis_prefix: str) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = LeanRedis.from_url(f"redis://127.0.0.1:{port}/0")
    budget = ClientBudget(RateLimiter(hung, prefix=redis_prefix, service="token", timeout=0.1,
                                      limited=RATE_LIMITED, failed_open=RATE_LIMIT_FAIL_OPEN),
                          RateLimit(1, 60))
    client = AuthenticatedClient("otesse_ci_x", "confidential", (), "client_secret_post")
    before = REGISTRY.get_sample_value("otesse_token_rate_limit_fail_open_total") or 0.0
    try:
        for _ in range(3):  # over the limit of 1, but Redis cannot count: let through
            await asyncio.wait_for(budget.charge(client), timeout=1.0)
    finally:
        await hung.aclose()
        server.close()
        for writer in writers:
            writer.transport.abort()
    after = REGISTRY.get_sample_value("otesse_token_rate_limit_fail_open_total") or 0.0
    assert after - before == 3


async def test_the_budget_counts_on_its_own_redis_when_given_one(
        store_settings: StoreSettings, registry_address: str,
        registry: registry_pb2_grpc.ClientRegistryAsyncStub, redis: aioredis.Redis,
        private_redis: PrivateRedis) -> None:
    """``OTESSE_RATE_LIMIT_REDIS_URL``: the budget is kept there, while the codes stay on the
    shared Redis."""
    stores = replace(store_settings, rate_limit_redis_url=Secret(private_redis.url))
    settings = make_settings(stores, registry_address, rate_per_client=RateLimit(BUDGET, 60))
    client = await register_client(registry)
    digest = hashlib.sha256(client.client_id.encode()).hexdigest()[:32]
    key = f"{stores.redis_prefix}token:rate:token_client:{digest}"
    own = aioredis.Redis.from_url(private_redis.url)
    try:
        async with running(settings) as service:
            code = await issue_code(redis, stores.redis_prefix, client)
            answers = [await exchange(service.http, client, code)]
            answers += [await refresh(service.http, client, "otesse_rt_made-up")
                        for _ in range(BUDGET)]
        assert [a.status_code for a in answers] == [200, 400, 400, 429]
        assert await own.exists(key) and not await redis.exists(key)
    finally:
        await own.aclose()
