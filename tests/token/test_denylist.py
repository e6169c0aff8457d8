"""The deny-list when Redis cannot answer: revocation checks ask Postgres's record instead, so a
Redis outage slows validation down rather than stopping it; a revocation made meanwhile takes
effect at once and is never forgotten when Redis returns; with Postgres down too, every check
fails closed (UNAVAILABLE, never "active").

Redis and Postgres go down for real: behind a :class:`FaultProxy` that drops every connection,
or (a stall) a Redis of the test's own stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2
from services.common.settings import Secret, StoreSettings
from services.token.denylist import REDIS_TIMEOUT_SECONDS
from tests.faults.stores import PrivateRedis
from tests.proxy import FaultProxy
from tests.token.conftest import (
    Client,
    TokenService,
    exchange,
    issue_code,
    make_settings,
    running,
    tokens_for,
)

REVOKED = token_pb2.VALIDATION_REASON_REVOKED


@dataclass
class Outage:
    token: TokenService
    redis: FaultProxy
    postgres: FaultProxy


@asynccontextmanager
async def behind_proxies(store_settings: StoreSettings,
                         registry_address: str) -> AsyncIterator[Outage]:
    """A token service whose Redis (this run's) and Postgres are each behind a proxy."""
    redis_at = FaultProxy("127.0.0.1", 6379)
    database = urlsplit(store_settings.database_url.value)
    postgres_at = FaultProxy(database.hostname or "127.0.0.1", database.port or 5432)
    await redis_at.start()
    await postgres_at.start()
    stores = replace(
        store_settings, redis_url=Secret(f"redis://127.0.0.1:{redis_at.port}/0"),
        database_url=Secret(database._replace(
            netloc=f"{database.username}@127.0.0.1:{postgres_at.port}").geturl()))
    try:
        async with running(make_settings(stores, registry_address)) as token:
            yield Outage(token, redis_at, postgres_at)
    finally:
        await redis_at.cut()
        await postgres_at.cut()


async def validate(token: TokenService, access_token: str) -> token_pb2.ValidateTokenResponse:
    return await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=access_token), timeout=5.0)


async def revoke(token: TokenService, client: Client, value: str) -> httpx.Response:
    return await token.http.post("/oauth/revoke", data={
        "token": value, "client_id": client.client_id, "client_secret": client.secret})


async def test_redis_down_validation_asks_postgres(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    async with behind_proxies(store_settings, registry_address) as outage:
        token = outage.token
        live = await tokens_for(token, redis, redis_prefix, client)
        revoked_before = await tokens_for(token, redis, redis_prefix, client)
        revoked_during = await tokens_for(token, redis, redis_prefix, client)
        assert (await revoke(token, client, revoked_before["refresh_token"])).status_code == 200
        code = await issue_code(redis, redis_prefix, client)

        await outage.redis.cut()
        assert (await validate(token, live["access_token"])).active
        assert (await validate(token, revoked_before["access_token"])).reason == REVOKED
        # A revocation while Redis is down is recorded, answered, and in force at once.
        assert (await revoke(token, client, revoked_during["refresh_token"])).status_code == 200
        assert (await validate(token, revoked_during["access_token"])).reason == REVOKED
        introspected = await token.http.post("/oauth/introspect", data={
            "token": live["access_token"], "client_id": client.client_id,
            "client_secret": client.secret})
        assert (introspected.status_code, introspected.json()["active"]) == (200, True)
        # The code lives in Redis: its exchange needs Redis.
        refused = await exchange(token.http, client, code)
        assert (refused.status_code, refused.json()["error"]) == (503, "temporarily_unavailable")
        assert refused.headers["retry-after"] == "1"
        ready = (await token.http.get("/readyz")).json()
        assert ready["status"] != "ready" and ready["checks"]["redis"] != "ok"

        await outage.redis.restore()
        exchanged = await exchange(token.http, client, code)  # the code was never consumed
        assert exchanged.status_code == 200, exchanged.text
        assert (await validate(token, revoked_during["access_token"])).reason == REVOKED
        assert (await validate(token, live["access_token"])).active
        grant_key = f"{redis_prefix}token:deny:grant:"
        deadline = time.monotonic() + 5.0
        # Redis catches up with the revocation it missed, and checks go back to it.
        while not (await redis.keys(grant_key + "*") and token.components.denylist.trusts_redis):
            assert time.monotonic() < deadline, "the deny-list never caught up"
            await asyncio.sleep(0.05)


async def test_a_revocation_redis_missed_never_validates_when_redis_returns(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    """Redis comes back with its data and its "complete" marker, but without the revocation
    made while it was away: not one check in between may call the token active."""
    async with behind_proxies(store_settings, registry_address) as outage:
        token = outage.token
        pair = await tokens_for(token, redis, redis_prefix, client)
        assert (await validate(token, pair["access_token"])).active  # the marker is set

        await outage.redis.cut()
        assert (await revoke(token, client, pair["refresh_token"])).status_code == 200
        await outage.redis.restore()
        assert await redis.exists(f"{redis_prefix}token:deny:complete")

        reasons = set()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            reasons.add((await validate(token, pair["access_token"])).reason)
        assert reasons == {REVOKED}


async def test_redis_and_postgres_down_fail_closed(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    async with behind_proxies(store_settings, registry_address) as outage:
        token = outage.token
        live = await tokens_for(token, redis, redis_prefix, client)
        revoked = await tokens_for(token, redis, redis_prefix, client)
        assert (await revoke(token, client, revoked["refresh_token"])).status_code == 200

        await outage.redis.cut()
        await outage.postgres.cut()
        for pair in (live, revoked):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await validate(token, pair["access_token"])
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        introspected = await token.http.post("/oauth/introspect", data={
            "token": revoked["access_token"], "client_id": client.client_id,
            "client_secret": client.secret})
        assert (introspected.status_code, introspected.headers["retry-after"]) == (503, "1")

        await outage.redis.restore()
        await outage.postgres.restore()
        assert (await validate(token, live["access_token"])).active
        assert (await validate(token, revoked["access_token"])).reason == REVOKED


async def test_a_private_redis_costs_a_validation_at_most_its_timeout(
        store_settings: StoreSettings, registry_address: str, redis_prefix: str,
        client: Client, private_redis: PrivateRedis) -> None:
    stores = replace(store_settings, redis_url=Secret(private_redis.url))
    codes = aioredis.Redis.from_url(private_redis.url)
    try:
        async with running(make_settings(stores, registry_address)) as token:
            live = await tokens_for(token, codes, redis_prefix, client)
            revoked = await tokens_for(token, codes, redis_prefix, client)
            assert (await revoke(token, client, revoked["refresh_token"])).status_code == 200
            assert (await validate(token, live["access_token"])).active

            private_redis.pause()
            try:
                answers: list[tuple[Any, float]] = []
                for pair in (live, revoked, live):
                    started = time.monotonic()
                    result = await validate(token, pair["access_token"])
                    answers.append((result.reason, time.monotonic() - started))
            finally:
                private_redis.resume()
            assert [reason for reason, _ in answers] == [
                token_pb2.VALIDATION_REASON_VALID, REVOKED, token_pb2.VALIDATION_REASON_VALID]
            # The first check waits for Redis up to its timeout; later ones go straight to
            # Postgres (generous margins: the machine is busy).
            assert answers[0][1] < REDIS_TIMEOUT_SECONDS + 1.0, answers
            assert max(seconds for _, seconds in answers[1:]) < 1.0, answers
    finally:
        await codes.aclose()
