"""``LocalTokenValidator`` against the real token service: local ES256 checks with the server's
own rules, revocations from the feed seen by every subscriber, resumption after a disconnect
(a cut connection, a connection closed by its maximum age), failing closed (503) when the feed
is silent past the bound or before the first snapshot, key rotation, and a deny-set that
forgets what can no longer validate. The bookings API runs in this mode too."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.bookings.app import create_app
from services.common import credentials
from services.common.settings import Secret, StoreSettings
from services.common.token_reasons import FROM_PROTO
from services.resource_kit import LocalTokenValidator, TokenServiceUnavailable
from tests.conftest import free_port
from tests.proxy import FaultProxy
from tests.resource_kit.test_bookings_api import bearer, bookings_settings, forged, impostor_key
from tests.servers import serve_app
from tests.token.conftest import (
    Client,
    TokenService,
    insert_previous_key,
    make_settings,
    refresh,
    register_client,
    running,
    tokens_for,
)

SCOPES = ("bookings:read", "customers:read")


@pytest_asyncio.fixture(scope="module")
async def token(store_settings: StoreSettings, registry_address: str,
                redis: aioredis.Redis) -> AsyncIterator[TokenService]:
    async with running(make_settings(store_settings, registry_address)) as service:
        yield service


@pytest_asyncio.fixture(scope="module")
async def app_client(registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> Client:
    return await register_client(registry)


@asynccontextmanager
async def local_validator(token: TokenService, *, grpc_port: int | None = None,
                          wait: bool = True, **options: Any,
                          ) -> AsyncIterator[LocalTokenValidator]:
    validator = LocalTokenValidator(
        f"127.0.0.1:{grpc_port or token.grpc_port}",
        f"{token.base_url}/.well-known/jwks.json", issuer=token.settings.issuer,
        audience=token.settings.audience, **options)
    try:
        if wait:
            await until(lambda: validator.current, timeout=10)
        yield validator
    finally:
        await validator.close()


async def until(condition: Any, timeout: float = 5.0) -> float:
    """Waits for ``condition()``; returns how long it took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)
    return time.monotonic() - started


def with_header(access_token: str, **changes: str) -> str:
    """The token with its header changed (the signature left as it was)."""
    header, payload, signature = access_token[len("otesse_at_"):].split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "==="))
    raw = json.dumps({**fields, **changes}).encode()
    return "otesse_at_" + ".".join([base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
                                    payload, signature])


async def reason(validator: LocalTokenValidator, access_token: str, *scopes: str) -> str:
    return (await validator.validate(access_token, required_scopes=scopes)).reason


async def refused_within(validator: LocalTokenValidator, access_token: str,
                         seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while await reason(validator, access_token) != "revoked":
            await asyncio.sleep(0.002)


async def revoke(token: TokenService, client: Client, value: str) -> None:
    response = await token.http.post("/oauth/revoke", auth=(client.client_id, client.secret),
                                     data={"token": value})
    assert response.status_code == 200


async def test_a_valid_token_is_checked_locally_with_its_claims(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        app_client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, app_client, scopes=SCOPES)
    async with local_validator(token) as validator:
        first = await validator.validate(pair["access_token"], required_scopes=SCOPES)
        again = await validator.validate(pair["access_token"], required_scopes=SCOPES)
        narrower = await validator.validate(pair["access_token"],
                                            required_scopes=("bookings:write",))
    assert (first.active, first.reason) == (True, "valid")
    assert again == first
    assert first.token is not None and first.token.client_id == app_client.client_id
    assert first.token.scopes == frozenset(SCOPES)
    assert (narrower.active, narrower.reason) == (False, "insufficient_scope")


@pytest.mark.parametrize(("make_token", "expected"), [
    (lambda t: forged(t, key=impostor_key(t)), "bad_signature"),
    (lambda t: forged(t, exp=int(time.time()) - 1), "expired"),
    (lambda t: forged(t, aud="https://elsewhere.example"), "wrong_issuer_or_audience"),
    (lambda t: forged(t, iss="https://impostor.example"), "wrong_issuer_or_audience"),
    (lambda t: "otesse_at_e30.e30." + "A" * 86, "malformed"),
    (lambda t: with_header(forged(t), alg="none"), "malformed"),
    (lambda t: with_header(forged(t), alg="HS256"), "malformed"),
    (lambda t: with_header(forged(t), typ="JWT"), "malformed"),
    (lambda t: "not-ours", "malformed"),
], ids=["fails because the signature is forged", "fails because the token expired",
        "fails because the audience is another API", "fails because the issuer is another",
        "fails because the header is empty", "fails because alg is none",
        "fails because alg is not ES256", "fails because typ is not at+jwt",
        "fails because the token is not ours"])
async def test_bad_tokens_are_refused_locally(token: TokenService, make_token: Any,
                                              expected: str) -> None:
    async with local_validator(token) as validator:
        first = await reason(validator, make_token(token), "bookings:read")
        # Refusals are never remembered as verified: the second answer is the same.
        second = await reason(validator, make_token(token), "bookings:read")
    assert (first, second) == (expected, expected)


async def test_the_local_verdict_is_the_servers_for_every_kind_of_token(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        app_client: Client) -> None:
    """One profile (services/common/jwt_profile.py): ValidateToken and the local validator
    cannot disagree about a token."""
    pair = await tokens_for(token, redis, redis_prefix, app_client, scopes=SCOPES)
    revoked = await tokens_for(token, redis, redis_prefix, app_client, scopes=SCOPES)
    await revoke(token, app_client, revoked["refresh_token"])
    cases = {
        "valid": (pair["access_token"], SCOPES),
        "insufficient_scope": (pair["access_token"], ("bookings:write",)),
        "revoked": (revoked["access_token"], ()),
        "bad_signature": (forged(token, key=impostor_key(token)), ()),
        "expired": (forged(token, exp=int(time.time()) - 1), ()),
        "wrong_issuer_or_audience": (forged(token, aud="https://elsewhere.example"), ()),
        "malformed": (with_header(forged(token), alg="none"), ()),
    }
    async with local_validator(token) as validator:
        await refused_within(validator, revoked["access_token"], 2.0)
        for expected, (value, scopes) in cases.items():
            server = await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(
                token=value, required_scopes=scopes))
            local = await validator.validate(value, required_scopes=scopes)
            assert (FROM_PROTO[server.reason], local.reason) == (expected, expected)
            assert server.active == local.active == (expected == "valid")


async def test_a_token_expiring_after_it_was_verified_is_refused(token: TokenService) -> None:
    short = forged(token, exp=int(time.time()) + 2)
    async with local_validator(token) as validator:
        assert await reason(validator, short) == "valid"
        await asyncio.sleep(2.1)
        assert await reason(validator, short) == "expired"


@pytest.mark.parametrize("how", ["refresh token", "access token", "authorized apps",
                                 "refresh reuse"])
async def test_a_revocation_is_seen_by_every_subscriber(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, app_client: Client,
        pool: Any, how: str) -> None:
    user = f"user-{credentials.random_urlsafe(6)}"
    pair = await tokens_for(token, redis, redis_prefix, app_client, user_id=user)
    async with local_validator(token) as one, local_validator(token) as two, \
            local_validator(token) as three, local_validator(token) as four:
        validators = (one, two, three, four)
        for validator in validators:
            assert await reason(validator, pair["access_token"]) == "valid"
        if how == "refresh token":
            await revoke(token, app_client, pair["refresh_token"])
        elif how == "access token":
            await revoke(token, app_client, pair["access_token"])
        elif how == "authorized apps":
            await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
                user_id=user, client_id=app_client.client_id))
        else:
            assert (await refresh(token.http, app_client, pair["refresh_token"])
                    ).status_code == 200
            await pool.execute("UPDATE token.refresh_tokens SET rotated_at = rotated_at"
                               " - interval '1 hour' WHERE token_hash = $1",
                               credentials.sha256(pair["refresh_token"]))
            assert (await refresh(token.http, app_client, pair["refresh_token"])
                    ).status_code == 400
        refused: list[str] = []

        async def refuses(validator: LocalTokenValidator) -> None:
            while await reason(validator, pair["access_token"]) != "revoked":
                await asyncio.sleep(0.002)
            refused.append("revoked")

        async with asyncio.timeout(2):
            await asyncio.gather(*(refuses(validator) for validator in validators))
    assert refused == ["revoked"] * 4


async def test_a_subscriber_disconnected_during_a_revocation_refuses_once_back(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        app_client: Client) -> None:
    proxy = FaultProxy("127.0.0.1", token.grpc_port)
    await proxy.start()
    pair = await tokens_for(token, redis, redis_prefix, app_client)
    try:
        async with local_validator(token, grpc_port=proxy.port, stale_after=3.0) as validator:
            assert await reason(validator, pair["access_token"]) == "valid"
            syncs = validator.syncs
            await proxy.cut()
            await revoke(token, app_client, pair["refresh_token"])
            await proxy.restore()
            await until(lambda: validator.syncs > syncs, timeout=10)
            # Back: the revocations made meanwhile came before the synced marker.
            assert await reason(validator, pair["access_token"]) == "revoked"
    finally:
        await proxy.cut()


async def test_a_feed_silent_past_the_bound_is_503_then_recovers(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        app_client: Client) -> None:
    proxy = FaultProxy("127.0.0.1", token.grpc_port)
    await proxy.start()
    pair = await tokens_for(token, redis, redis_prefix, app_client)
    try:
        async with local_validator(token, grpc_port=proxy.port, stale_after=1.0) as validator:
            assert await reason(validator, pair["access_token"]) == "valid"
            await proxy.cut()
            silent = await until(lambda: not validator.current, timeout=5)
            assert silent <= 1.0 + 1.0  # the bound, and room for a busy machine
            with pytest.raises(TokenServiceUnavailable):
                await validator.validate(pair["access_token"])
            with pytest.raises(TokenServiceUnavailable):
                await validator.ping()
            await proxy.restore()
            await until(lambda: validator.current, timeout=5)
            assert await reason(validator, pair["access_token"]) == "valid"
    finally:
        await proxy.cut()


async def test_a_replica_that_cannot_read_postgres_stops_vouching(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, app_client: Client) -> None:
    """The stream stays up, but a replica that cannot read the record sends no heartbeat: its
    subscribers fail closed rather than trust a deny-set that may be behind."""
    parts = urlsplit(store_settings.database_url.value)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    settings = make_settings(replace(store_settings, database_url=Secret(proxied)),
                             registry_address)
    try:
        async with running(settings) as cut_off:
            pair = await tokens_for(cut_off, redis, redis_prefix, app_client)
            async with local_validator(cut_off, stale_after=4.0) as validator:
                assert await reason(validator, pair["access_token"]) == "valid"
                await proxy.cut()
                await until(lambda: not validator.current, timeout=10)
                # The replica itself says it is not reading the log (no heartbeat, and a new
                # subscription is refused until it is).
                assert not cut_off.components.feed.fresh
                with pytest.raises(TokenServiceUnavailable):
                    await validator.validate(pair["access_token"])
                await proxy.restore()
                await until(lambda: validator.current, timeout=10)
                assert await reason(validator, pair["access_token"]) == "valid"
    finally:
        await proxy.cut()


async def test_before_the_first_snapshot_every_check_is_unavailable(
        token: TokenService) -> None:
    async with local_validator(token, grpc_port=free_port(), wait=False) as validator:
        await asyncio.sleep(0.3)
        with pytest.raises(TokenServiceUnavailable):
            await validator.validate(forged(token))


async def test_streams_closed_by_connection_age_are_resumed_without_a_gap(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, app_client: Client) -> None:
    settings = replace(make_settings(store_settings, registry_address),
                       grpc_max_connection_age=1.0)
    async with running(settings) as aged:
        pair = await tokens_for(aged, redis, redis_prefix, app_client)
        async with local_validator(aged, stale_after=2.0) as validator:
            started = validator.subscriptions
            deadline = time.monotonic() + 8
            while validator.subscriptions < started + 2:
                # Never stale while streams are cut and resumed.
                assert validator.current
                assert time.monotonic() < deadline, "no stream was closed by its age"
                await asyncio.sleep(0.02)
            await revoke(aged, app_client, pair["refresh_token"])
            await refused_within(validator, pair["access_token"], 2.0)


async def test_a_rotated_key_is_fetched_on_its_first_token_at_most_once_per_interval(
        token: TokenService, pool: Any) -> None:
    async with local_validator(token, jwks_refresh_seconds=1.0) as validator:
        key = await insert_previous_key(pool, expires_in_seconds=3600)
        await token.components.ring.refresh()
        signed = forged(token, key=key)
        # Fetched at start less than the interval ago: not fetched again yet.
        assert await reason(validator, signed) == "bad_signature"
        await asyncio.sleep(1.05)
        assert await reason(validator, signed) == "valid"


async def test_the_deny_set_forgets_what_can_no_longer_validate(
        token: TokenService, app_client: Client) -> None:
    short = forged(token, client_id=app_client.client_id, exp=int(time.time()) + 2,
                   jti=f"jti-{credentials.random_urlsafe(8)}")
    async with local_validator(token) as validator:
        base = validator.deny_set_size
        await revoke(token, app_client, short)
        await until(lambda: validator.deny_set_size == base + 1, timeout=3)
        assert await reason(validator, short) == "revoked"
        # Once past its relevance (the token's exp), pruned within a pruning interval.
        await until(lambda: validator.deny_set_size == base, timeout=10)


async def test_bookings_in_local_mode(token: TokenService, redis: aioredis.Redis,
                                      redis_prefix: str, app_client: Client) -> None:
    settings = bookings_settings(token, validation="local", feed_stale_seconds=1.0)
    pair = await tokens_for(token, redis, redis_prefix, app_client, scopes=("bookings:read",))
    proxy = FaultProxy("127.0.0.1", token.grpc_port)
    await proxy.start()
    settings = replace(settings, token_grpc_addr=f"127.0.0.1:{proxy.port}")
    try:
        async with serve_app(create_app(settings)) as url, \
                httpx.AsyncClient(base_url=url, timeout=10) as api:
            async def status() -> int:
                return (await api.get("/v1/bookings", headers=bearer(pair["access_token"]))
                        ).status_code

            for _ in range(100):
                if await status() == 200:
                    break
                await asyncio.sleep(0.05)
            assert await status() == 200
            scoped = await api.get("/v1/customers", headers=bearer(pair["access_token"]))
            assert (scoped.status_code, scoped.json()["error"]) == (403, "insufficient_scope")
            assert (await api.get("/readyz")).status_code == 200
            await proxy.cut()
            await asyncio.sleep(1.3)
            down = await api.get("/v1/bookings", headers=bearer(pair["access_token"]))
            assert (down.status_code, down.json()["error"]) == (503, "temporarily_unavailable")
            ready = (await api.get("/readyz")).json()
            assert ready["status"] != "ready" and ready["checks"]["token"] != "ok"
            await proxy.restore()
            await revoke(token, app_client, pair["refresh_token"])
            for _ in range(100):
                if await status() == 401:
                    break
                await asyncio.sleep(0.05)
            refused = await api.get("/v1/bookings", headers=bearer(pair["access_token"]))
            assert refused.status_code == 401
            assert refused.json()["error_description"] == "The access token was revoked."
    finally:
        await proxy.cut()
