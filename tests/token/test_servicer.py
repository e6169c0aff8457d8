"""gRPC TokenService: ValidateToken's reasons, RevokeGrant and ListGrants; revocation visible at
once, surviving the loss of this run's Redis keys; the registry or Postgres down → 503 /
UNAVAILABLE where they are needed, then recovery (Redis down: tests/token/test_denylist.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import ec

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common.settings import Secret, StoreSettings
from services.token.access_tokens import AccessClaims, sign
from services.token.keys import SigningKey
from tests.proxy import FaultProxy
from tests.token.conftest import (
    Client,
    TokenService,
    make_settings,
    refresh,
    register_client,
    running,
    tokens_for,
)


async def validate(token: TokenService, access_token: str,
                   *required: str) -> token_pb2.ValidateTokenResponse:
    return await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=access_token, required_scopes=required))


def forged(token: TokenService, **changes: Any) -> str:
    """A token signed by the real current key with chosen claims."""
    now = int(time.time())
    claims = AccessClaims(iss=token.settings.issuer, sub="user-x", aud=token.settings.audience,
                          client_id="otesse_ci_x", scopes=("bookings:read",), iat=now,
                          exp=now + 60, jti="jti-x", grant_id="00000000-0000-0000-0000-0000000"
                          "00000")
    return sign(replace(claims, **changes), token.components.ring.current())


def tamper_payload(access_token: str) -> str:
    prefix, rest = access_token[:10], access_token[10:]
    header, payload, signature = rest.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
    claims["scope"] = "bookings:read bookings:write customers:read customers:write"
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}{header}.{raw}.{signature}"


def foreign_key_token(token: TokenService) -> str:
    current = token.components.ring.current()
    impostor = SigningKey(kid=current.kid, state="current",
                          public_key=current.public_key, jwk=current.jwk,
                          private_key=ec.generate_private_key(ec.SECP256R1()),
                          activated_at=None)
    now = int(time.time())
    return sign(AccessClaims(iss=token.settings.issuer, sub="u", aud=token.settings.audience,
                             client_id="c", scopes=(), iat=now, exp=now + 60, jti="j",
                             grant_id="g"), impostor)


def header_swap(access_token: str, header: dict[str, str]) -> str:
    rest = access_token[10:].split(".")
    rest[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return "otesse_at_" + ".".join(rest)


REASONS: list[tuple[str, Callable[[TokenService, str], str], tuple[str, ...], int]] = [
    ("valid", lambda t, a: a, (), token_pb2.VALIDATION_REASON_VALID),
    ("valid with required scope", lambda t, a: a, ("bookings:read",),
     token_pb2.VALIDATION_REASON_VALID),
    ("insufficient scope", lambda t, a: a, ("bookings:write",),
     token_pb2.VALIDATION_REASON_INSUFFICIENT_SCOPE),
    ("empty", lambda t, a: "", (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("no prefix", lambda t, a: a[10:], (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("two segments", lambda t, a: a.rsplit(".", 1)[0], (),
     token_pb2.VALIDATION_REASON_MALFORMED),
    ("not base64", lambda t, a: "otesse_at_***.***.***", (),
     token_pb2.VALIDATION_REASON_MALFORMED),
    ("non-ASCII", lambda t, a: a + "é", (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("too long", lambda t, a: a + "A" * 5000, (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("alg none", lambda t, a: header_swap(a, {"alg": "none", "typ": "at+jwt", "kid": "k"}),
     (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("alg HS256", lambda t, a: header_swap(a, {"alg": "HS256", "typ": "at+jwt", "kid": "k"}),
     (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("typ JWT", lambda t, a: header_swap(a, {"alg": "ES256", "typ": "JWT",
                                             "kid": t.components.ring.current().kid}),
     (), token_pb2.VALIDATION_REASON_MALFORMED),
    ("unknown kid", lambda t, a: header_swap(a, {"alg": "ES256", "typ": "at+jwt",
                                                 "kid": "unknown"}),
     (), token_pb2.VALIDATION_REASON_BAD_SIGNATURE),
    ("tampered claims", lambda t, a: tamper_payload(a), (),
     token_pb2.VALIDATION_REASON_BAD_SIGNATURE),
    ("signed by another key", lambda t, a: foreign_key_token(t), (),
     token_pb2.VALIDATION_REASON_BAD_SIGNATURE),
    ("expired", lambda t, a: forged(t, exp=int(time.time()) - 1), (),
     token_pb2.VALIDATION_REASON_EXPIRED),
    ("wrong issuer", lambda t, a: forged(t, iss="https://evil.example"), (),
     token_pb2.VALIDATION_REASON_WRONG_ISSUER_OR_AUDIENCE),
    ("wrong audience", lambda t, a: forged(t, aud="https://other.example"), (),
     token_pb2.VALIDATION_REASON_WRONG_ISSUER_OR_AUDIENCE),
]


@pytest.mark.parametrize(("make", "required", "reason"), [case[1:] for case in REASONS],
                         ids=[case[0] for case in REASONS])
async def test_validate_token_reasons(token: TokenService, redis: aioredis.Redis,
                                      redis_prefix: str, client: Client,
                                      make: Callable[[TokenService, str], str],
                                      required: tuple[str, ...], reason: int) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    result = await validate(token, make(token, pair["access_token"]), *required)
    assert result.reason == reason
    assert result.active == (reason == token_pb2.VALIDATION_REASON_VALID)


async def test_validate_fills_claims(token: TokenService, redis: aioredis.Redis,
                                     redis_prefix: str, client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client, user_id="user-claims")
    result = await validate(token, pair["access_token"], "customers:write")
    assert not result.active
    assert (result.subject, result.client_id) == ("user-claims", client.client_id)
    assert list(result.scopes) == ["bookings:read", "customers:read"]
    assert result.expires_at.seconds - result.issued_at.seconds == 3600
    assert result.grant_id and result.token_id


async def test_revocation_is_visible_within_one_second(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    assert (await validate(token, pair["access_token"])).active
    started = time.monotonic()
    response = await token.http.post("/oauth/revoke", data={
        "token": pair["refresh_token"], "client_id": client.client_id,
        "client_secret": client.secret})
    assert response.status_code == 200
    result = await validate(token, pair["access_token"])
    assert result.reason == token_pb2.VALIDATION_REASON_REVOKED
    assert time.monotonic() - started < 1.0


async def delete_denylist(redis: aioredis.Redis, redis_prefix: str) -> int:
    """What a Redis restart without persistence does to this run's deny-list (only this run's
    key space: the shared Redis is never flushed)."""
    keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}token:*", count=1000)]
    if keys:
        await redis.delete(*keys)
    return len(keys)


async def test_revocation_survives_loss_of_the_redis_keys(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    revoked_grant = await tokens_for(token, redis, redis_prefix, client)
    revoked_alone = await tokens_for(token, redis, redis_prefix, client)
    live = await tokens_for(token, redis, redis_prefix, client)
    await token.http.post("/oauth/revoke", data={
        "token": revoked_grant["refresh_token"], "client_id": client.client_id,
        "client_secret": client.secret})
    await token.http.post("/oauth/revoke", data={
        "token": revoked_alone["access_token"], "client_id": client.client_id,
        "client_secret": client.secret})

    assert await delete_denylist(redis, redis_prefix) > 0

    assert (await validate(token, revoked_grant["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    assert (await validate(token, revoked_alone["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    assert (await validate(token, live["access_token"])).active
    # The rebuilt deny-list carries TTLs like every key.
    async for key in redis.scan_iter(match=f"{redis_prefix}token:*"):
        assert await redis.ttl(key) > 0


async def test_revoke_grant_by_user_client_and_id(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    app_a = await register_client(registry)
    app_b = await register_client(registry)
    a1 = await tokens_for(token, redis, redis_prefix, app_a, user_id="user-rg-1")
    a2 = await tokens_for(token, redis, redis_prefix, app_a, user_id="user-rg-2")
    b1 = await tokens_for(token, redis, redis_prefix, app_b, user_id="user-rg-1")
    b2 = await tokens_for(token, redis, redis_prefix, app_b, user_id="user-rg-2")

    # User 1 revokes app B on the "Authorized apps" page.
    response = await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
        user_id="user-rg-1", client_id=app_b.client_id))
    assert response.revoked_grants == 1
    assert (await validate(token, b1["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    assert (await validate(token, a1["access_token"])).active
    # Idempotent.
    again = await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
        user_id="user-rg-1", client_id=app_b.client_id))
    assert again.revoked_grants == 0

    # App A is deleted: every grant it holds goes.
    response = await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
        client_id=app_a.client_id))
    assert response.revoked_grants == 2
    for pair in (a1, a2):
        assert (await validate(token, pair["access_token"])).reason == \
            token_pb2.VALIDATION_REASON_REVOKED
        refreshed = await refresh(token.http, app_a, pair["refresh_token"])
        assert refreshed.json()["error"] == "invalid_grant"

    grant_id = (await validate(token, b2["access_token"])).grant_id
    response = await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))
    assert response.revoked_grants == 1
    assert (await validate(token, b2["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED


@pytest.mark.parametrize("request_fields", [
    {}, {"grant_id": "not-a-uuid"}, {"user_id": "u" * 200},
], ids=["no selector", "grant_id not a UUID", "user_id too long"])
async def test_revoke_grant_invalid_argument(token: TokenService,
                                             request_fields: dict[str, str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_grants_newest_first_with_usage(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        client: Client, public_client: Client) -> None:
    older = await tokens_for(token, redis, redis_prefix, client, user_id="user-list",
                             scopes=("bookings:read",))
    newer = await tokens_for(token, redis, redis_prefix, public_client, user_id="user-list")
    revoked = await tokens_for(token, redis, redis_prefix, client, user_id="user-list")
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
        grant_id=(await validate(token, revoked["access_token"])).grant_id))
    await refresh(token.http, client, older["refresh_token"])

    grants = (await token.grpc.ListGrants(token_pb2.ListGrantsRequest(user_id="user-list"))
              ).grants

    assert [grant.client_id for grant in grants] == [public_client.client_id, client.client_id]
    assert [grant.grant_id for grant in grants] == [
        (await validate(token, pair["access_token"])).grant_id for pair in (newer, older)]
    assert list(grants[1].scopes) == ["bookings:read"]
    assert grants[1].HasField("last_used_at") and not grants[0].HasField("last_used_at")
    assert grants[0].created_at.seconds >= grants[1].created_at.seconds
    assert grants[0].expires_at.seconds > time.time() + 29 * 24 * 3600
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await token.grpc.ListGrants(token_pb2.ListGrantsRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_registry_down_means_503_not_401(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    host, port = registry_address.rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    settings = make_settings(store_settings, f"127.0.0.1:{proxy.port}",
                             client_auth_cache_seconds=0.0)
    async with running(settings) as token:
        pair = await tokens_for(token, redis, redis_prefix, client)
        await proxy.cut()
        response = await refresh(token.http, client, pair["refresh_token"])
        assert (response.status_code, response.json()["error"]) == (
            503, "temporarily_unavailable")
        assert response.headers["retry-after"] == "1"
        await proxy.restore()

        async def recovered() -> None:
            again = await refresh(token.http, client, pair["refresh_token"])
            assert again.status_code == 200, again.text

        await eventually(recovered)
    await proxy.cut()


async def test_validation_needs_no_postgres(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    parts = urlsplit(store_settings.database_url.value)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    stores = replace(store_settings, database_url=Secret(proxied))
    async with running(make_settings(stores, registry_address)) as token:
        pair = await tokens_for(token, redis, redis_prefix, client)
        # The deny-list is complete in Redis (rebuilt from Postgres if this run's keys were
        # lost), so checks need only Redis.
        assert (await validate(token, pair["access_token"])).active

        await proxy.cut()

        assert (await validate(token, pair["access_token"])).active
        assert (await token.http.get("/.well-known/jwks.json")).status_code == 200
        response = await refresh(token.http, client, pair["refresh_token"])
        assert (response.status_code, response.json()["error"]) == (
            503, "temporarily_unavailable")
        assert response.headers["retry-after"] == "1"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await token.grpc.ListGrants(token_pb2.ListGrantsRequest(user_id="u"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        await proxy.restore()

        async def recovered() -> None:
            again = await refresh(token.http, client, pair["refresh_token"])
            assert again.status_code == 200, again.text

        await eventually(recovered)
    await proxy.cut()
