"""The refresh_token grant: rotation, reuse detection (RFC 9700 §4.14.2), the retry window
(DESIGN §2.3) concurrent and sequential, inside and after it, scope narrowing (RFC 6749 §6)
and the 30-day life."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from prometheus_client import REGISTRY

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import credentials
from services.common.audit import NOWHERE, Actor
from services.common.settings import StoreSettings
from services.token.access_tokens import AccessTokenIssuer
from services.token.grants.refresh_token import RefreshTokenGrant
from services.token.keys import KeyRing, NoSigningKey, PgKeyStore
from services.token.store import PgGrantStore
from tests.token.conftest import (
    KEK,
    Client,
    TokenService,
    make_settings,
    refresh,
    register_client,
    running,
    segments,
    tokens_for,
)
from tests.token.test_authorization_code import authenticated


async def backdate_rotation(pool: asyncpg.Pool, refresh_token: str, seconds: int) -> None:
    """Moves a rotation into the past, as if ``seconds`` had gone by."""
    await pool.execute("UPDATE token.refresh_tokens SET rotated_at = rotated_at - $2::int"
                       " * interval '1 second' WHERE token_hash = $1",
                       credentials.sha256(refresh_token), seconds)


async def validate(token: TokenService, access_token: str) -> token_pb2.ValidateTokenResponse:
    return await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(token=access_token))


async def test_rotation_returns_a_new_pair_and_the_old_token_stops(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    response = await refresh(token.http, client, first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert list(second) == ["access_token", "refresh_token", "token_type", "expires_in",
                            "scope"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (second["expires_in"], second["scope"]) == (3600, first["scope"])
    second_claims = await validate(token, second["access_token"])
    first_claims = await validate(token, first["access_token"])
    assert second_claims.active and second_claims.grant_id == first_claims.grant_id
    # The successor works, and the grant's listing shows its use.
    third = await refresh(token.http, client, second["refresh_token"])
    assert third.status_code == 200
    listed = {grant.grant_id: grant for grant in await PgGrantStore(
        pool, access_token_ttl=3600).list_grants(user_id=second_claims.subject)}
    assert listed[second_claims.grant_id].last_used_at is not None


async def test_public_client_refreshes_without_secret(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        public_client: Client) -> None:
    first = await tokens_for(token, redis, redis_prefix, public_client)
    response = await refresh(token.http, public_client, first["refresh_token"])
    assert response.status_code == 200, response.text


async def test_sequential_retry_inside_window_returns_the_same_pair(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    a = await refresh(token.http, client, first["refresh_token"])
    b = await refresh(token.http, client, first["refresh_token"])
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    assert (await validate(token, a.json()["access_token"])).active


async def test_twenty_concurrent_refreshes_yield_one_pair_and_no_revocation(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    responses = await asyncio.gather(*(refresh(token.http, client, first["refresh_token"])
                                       for _ in range(20)))
    assert [response.status_code for response in responses] == [200] * 20
    bodies = {response.text for response in responses}
    assert len(bodies) == 1
    pair = responses[0].json()
    result = await validate(token, pair["access_token"])
    assert result.active
    revoked = await pool.fetchval("SELECT revoked_at FROM token.grants WHERE grant_id ="
                                  " $1::uuid", result.grant_id)
    assert revoked is None
    tokens = await pool.fetchval("SELECT count(*) FROM token.refresh_tokens WHERE grant_id ="
                                 " $1::uuid", result.grant_id)
    assert tokens == 2  # the original and exactly one successor
    assert (await refresh(token.http, client, pair["refresh_token"])).status_code == 200


async def test_reuse_after_the_window_revokes_the_grant(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    await backdate_rotation(pool, first["refresh_token"], token.settings.refresh_retry_window)
    reuses_before = REGISTRY.get_sample_value("otesse_token_grants_revoked_total",
                                              {"cause": "refresh_reuse"}) or 0.0

    reuse = await refresh(token.http, client, first["refresh_token"])

    assert REGISTRY.get_sample_value("otesse_token_grants_revoked_total",
                                     {"cause": "refresh_reuse"}) == reuses_before + 1

    assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
    assert (await validate(token, second["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    assert (await validate(token, first["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    successor = await refresh(token.http, client, second["refresh_token"])
    assert (successor.status_code, successor.json()["error"]) == (400, "invalid_grant")


async def test_twenty_concurrent_reuses_after_the_window_revoke_the_grant(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    await backdate_rotation(pool, first["refresh_token"], 11)
    responses = await asyncio.gather(*(refresh(token.http, client, first["refresh_token"])
                                       for _ in range(20)))
    assert {(r.status_code, r.json()["error"]) for r in responses} == {(400, "invalid_grant")}
    assert (await validate(token, second["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED


async def test_reuse_inside_window_after_successor_was_used_revokes(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    third = (await refresh(token.http, client, second["refresh_token"])).json()
    reuse = await refresh(token.http, client, first["refresh_token"])
    assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
    assert (await validate(token, third["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED


async def test_the_sealed_copy_opens_only_with_the_old_token(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    # The copy travels with the successor (migration 0004).
    sealed = await pool.fetchval(
        "SELECT predecessor_sealed FROM token.refresh_tokens WHERE token_hash = $1",
        credentials.sha256(second["refresh_token"]))
    assert sealed is not None
    assert second["access_token"].encode() not in sealed
    assert second["refresh_token"].encode() not in sealed


@pytest_asyncio.fixture(scope="module")
async def no_window(store_settings: StoreSettings, registry_address: str,
                    redis: aioredis.Redis) -> AsyncIterator[TokenService]:
    async with running(make_settings(store_settings, registry_address,
                                     refresh_retry_window=0)) as service:
        yield service


async def test_window_zero_makes_any_reuse_revoke(
        no_window: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(no_window, redis, redis_prefix, client)
    second = (await refresh(no_window.http, client, first["refresh_token"])).json()
    sealed = await pool.fetchrow(
        "SELECT r.successor_sealed, s.predecessor_sealed FROM token.refresh_tokens r"
        " JOIN token.refresh_tokens s ON s.token_hash = r.successor_hash"
        " WHERE r.token_hash = $1", credentials.sha256(first["refresh_token"]))
    assert sealed is not None and tuple(sealed) == (None, None)
    reuse = await refresh(no_window.http, client, first["refresh_token"])
    assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
    assert (await validate(no_window, second["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED


async def test_window_zero_concurrent_refreshes_revoke(
        no_window: TokenService, redis: aioredis.Redis, redis_prefix: str,
        client: Client) -> None:
    first = await tokens_for(no_window, redis, redis_prefix, client)
    responses = await asyncio.gather(*(refresh(no_window.http, client, first["refresh_token"])
                                       for _ in range(20)))
    # At most one wins the rotation; every other presentation is reuse.
    assert sum(r.status_code == 200 for r in responses) <= 1
    assert {r.json()["error"] for r in responses if r.status_code != 200} == {"invalid_grant"}
    active = [r.json() for r in responses if r.status_code == 200]
    for pair in active:
        assert (await validate(no_window, pair["access_token"])).reason == \
            token_pb2.VALIDATION_REASON_REVOKED


@pytest.mark.parametrize(("requested", "status", "expected"), [
    ("bookings:read", 200, "bookings:read"),
    ("customers:read bookings:read", 200, "bookings:read customers:read"),
    ("bookings:write", 400, "invalid_scope"),
    ("bookings:read bookings:write", 400, "invalid_scope"),
    ("admin", 400, "invalid_scope"),
    ("bookings:read \"customers:read\"", 400, "invalid_scope"),
], ids=["narrower", "same set, any order", "wider", "partly wider", "unknown scope",
        "malformed scope"])
async def test_scope_may_narrow_never_widen(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        requested: str, status: int, expected: str) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    response = await refresh(token.http, client, first["refresh_token"], scope=requested)
    assert response.status_code == status, response.text
    body = response.json()
    if status == 200:
        assert body["scope"] == expected
        claims = await validate(token, body["access_token"])
        assert " ".join(claims.scopes) == expected
    else:
        assert body["error"] == expected


RETRIES = [
    # (first request's scope, the retry's scope, the retry gets the same pair)
    ("bookings:read", "bookings:read", True),
    ("bookings:read customers:read", "customers:read bookings:read", True),
    (None, None, True),
    (None, "bookings:read", False),
    ("bookings:read customers:read", "bookings:read", False),
    ("bookings:read", None, False),
    ("bookings:read", "customers:read", False),
]


@pytest.mark.parametrize(("first_scope", "retry_scope", "same"), RETRIES, ids=[
    "same scope", "same scopes in another order", "both without scope",
    "fails because the retry narrows the grant's scope",
    "fails because the retry narrows the first request's scope",
    "fails because the retry drops the scope parameter",
    "fails because the retry asks another scope"])
async def test_a_retry_gets_the_same_pair_only_for_the_same_scope(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, first_scope: str | None, retry_scope: str | None,
        same: bool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    scope = {"scope": first_scope} if first_scope is not None else {}
    pair = (await refresh(token.http, client, first["refresh_token"], **scope)).json()
    grant_id = (await validate(token, pair["access_token"])).grant_id
    count = "SELECT count(*) FROM token.refresh_tokens WHERE grant_id = $1::uuid"
    tokens_before = await pool.fetchval(count, grant_id)

    retry_args = {"scope": retry_scope} if retry_scope is not None else {}
    retry = await refresh(token.http, client, first["refresh_token"], **retry_args)

    if same:
        assert retry.status_code == 200 and retry.json() == pair
    else:
        assert (retry.status_code, retry.json()["error"]) == (400, "invalid_grant")
        assert "already used" in retry.json()["error_description"]
    # Nothing minted either way, and the grant lives on: a retry is not theft.
    assert await pool.fetchval(count, grant_id) == tokens_before
    assert (await validate(token, pair["access_token"])).active
    assert (await refresh(token.http, client, pair["refresh_token"])).status_code == 200


async def test_after_narrowing_omitted_scope_is_the_original_grant(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    narrowed = (await refresh(token.http, client, first["refresh_token"],
                              scope="bookings:read")).json()
    again = (await refresh(token.http, client, narrowed["refresh_token"])).json()
    # RFC 6749 §6: "if omitted is treated as equal to the scope originally granted".
    assert again["scope"] == first["scope"]


async def test_scope_removed_from_the_client_is_no_longer_issued(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    narrow_client = await register_client(registry, scopes=["bookings:read"])
    first = await tokens_for(token, redis, redis_prefix, narrow_client,
                             scopes=("bookings:read", "customers:read"))
    response = await refresh(token.http, narrow_client, first["refresh_token"])
    assert response.json()["scope"] == "bookings:read"


REFRESH_ERRORS: list[tuple[str, dict[str, Any], int, str]] = [
    ("missing refresh_token", {"refresh_token": None}, 400, "invalid_request"),
    ("malformed refresh_token", {"refresh_token": "otesse_rt_abc"}, 400, "invalid_grant"),
    ("bad checksum", {"checksum": True}, 400, "invalid_grant"),
    ("unknown refresh_token", {"unknown": True}, 400, "invalid_grant"),
    ("another client's token", {"other_client": True}, 400, "invalid_grant"),
    ("expired (30 days)", {"expired": True}, 400, "invalid_grant"),
    ("wrong secret", {"client_secret": "otesse_cs_wrong"}, 401, "invalid_client"),
    ("no client", {"client_id": None, "client_secret": None}, 401, "invalid_client"),
]


@pytest.mark.parametrize(("changes", "status", "error"), [case[1:] for case in REFRESH_ERRORS],
                         ids=[case[0] for case in REFRESH_ERRORS])
async def test_refresh_errors(token: TokenService, redis: aioredis.Redis, redis_prefix: str,
                              client: Client, public_client: Client, pool: asyncpg.Pool,
                              changes: dict[str, Any], status: int, error: str) -> None:
    owner = public_client if changes.get("other_client") else client
    pair = await tokens_for(token, redis, redis_prefix, owner)
    refresh_token = pair["refresh_token"]
    if changes.get("checksum"):
        refresh_token = refresh_token[:-1] + ("A" if refresh_token[-1] != "A" else "B")
    if changes.get("unknown"):
        refresh_token = credentials.new_credential("otesse_rt_")
    if changes.get("expired"):
        await pool.execute("UPDATE token.refresh_tokens SET expires_at = now() - interval"
                           " '1 second' WHERE token_hash = $1", credentials.sha256(refresh_token))
    body: dict[str, Any] = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                            "client_id": client.client_id, "client_secret": client.secret}
    body.update({key: value for key, value in changes.items() if key in body})
    response = await token.http.post("/oauth/token", json={
        key: value for key, value in body.items() if value is not None})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


async def test_refresh_tokens_live_thirty_days(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    lifetime = await pool.fetchval(
        "SELECT extract(epoch FROM expires_at - created_at) FROM token.refresh_tokens"
        " WHERE token_hash = $1", credentials.sha256(pair["refresh_token"]))
    assert abs(float(lifetime) - 30 * 24 * 3600) < 5


# --- One statement: what a refresh that is refused leaves, and the retry copy it seals --------


@pytest.mark.parametrize("attack", ["wider scope", "another client", "revoked grant"])
async def test_a_refused_refresh_rotates_nothing(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        public_client: Client, pool: asyncpg.Pool, attack: str) -> None:
    # The one statement checks everything before it writes: a refresh refused for the scope or
    # the client leaves the token as it was for its rightful holder (and an attacker holding
    # another client's credentials cannot burn it).
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = (await validate(token, pair["access_token"])).grant_id
    if attack == "revoked grant":
        await pool.execute("UPDATE token.grants SET revoked_at = now() WHERE grant_id = $1::uuid",
                           grant_id)
    presenter, extra = ((public_client, {}) if attack == "another client" else
                        (client, {"scope": "bookings:write"} if attack == "wider scope" else {}))

    refused = await refresh(token.http, presenter, pair["refresh_token"], **extra)

    assert refused.status_code == 400
    assert refused.json()["error"] == ("invalid_scope" if attack == "wider scope"
                                       else "invalid_grant")
    row = await pool.fetchrow(
        "SELECT rotated_at, successor_hash FROM token.refresh_tokens WHERE token_hash = $1",
        credentials.sha256(pair["refresh_token"]))
    assert row is not None and tuple(row) == (None, None)
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE grant_id = $1::uuid", grant_id) == 1
    if attack != "revoked grant":
        assert (await refresh(token.http, client, pair["refresh_token"])).status_code == 200


async def test_a_retry_after_the_signing_key_rotated_gets_the_same_claims_under_the_new_key(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    pair = (await refresh(token.http, client, first["refresh_token"])).json()
    assert await PgKeyStore(pool).rotate(kek=base64.b64decode(KEK), retire_after_seconds=3700,
                                         min_next_age_seconds=0, actor=Actor.operator())
    await token.components.ring.refresh()

    retry = (await refresh(token.http, client, first["refresh_token"])).json()

    # The old key's private half is gone: the same claims (the same jti, iat and expiry),
    # signed by the key that signs now, and the same refresh token.
    assert retry["refresh_token"] == pair["refresh_token"]
    (before_header, before), (after_header, after) = (segments(pair["access_token"]),
                                                      segments(retry["access_token"]))
    assert after_header["kid"] != before_header["kid"]
    assert after == before
    assert (await validate(token, retry["access_token"])).active


def seal_as_version_2(body: bytes, *, old_refresh_token: str) -> bytes:
    """The copy an earlier release sealed: the whole response body, under the v2 key."""
    digest = hashlib.sha256(b"-").digest()[:16]  # no scope parameter
    key = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                      info=b"otesse refresh retry v2").derive(old_refresh_token.encode()))
    nonce = os.urandom(12)
    return digest + nonce + key.encrypt(nonce, body,
                                        credentials.sha256(old_refresh_token) + digest)


async def test_a_copy_an_earlier_release_sealed_still_answers_the_retry(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # Rolling update: the rotation was made by a replica that sealed the whole body.
    first = await tokens_for(token, redis, redis_prefix, client)
    answered = await refresh(token.http, client, first["refresh_token"])
    await pool.execute(
        "UPDATE token.refresh_tokens SET predecessor_sealed = $2 WHERE token_hash = $1",
        credentials.sha256(answered.json()["refresh_token"]),
        seal_as_version_2(answered.content, old_refresh_token=first["refresh_token"]))

    retried = await refresh(token.http, client, first["refresh_token"])

    assert retried.status_code == 200 and retried.content == answered.content


async def test_no_signing_key_is_a_503_before_anything_rotates(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # A rotation that committed must be answered: were the token rotated first, the client's
    # retry after the window would be taken for theft.
    pair = await tokens_for(token, redis, redis_prefix, client)
    settings = token.settings
    unloaded = KeyRing(PgKeyStore(pool), kek=base64.b64decode(KEK))  # never refreshed: no key
    grant = RefreshTokenGrant(
        store=PgGrantStore(pool, access_token_ttl=3600),
        access_tokens=AccessTokenIssuer(unloaded, issuer=settings.issuer,
                                        audience=settings.audience,
                                        ttl=settings.access_token_ttl),
        denylist=token.components.denylist, refresh_ttl=3600,
        retry_window=settings.refresh_retry_window)

    with pytest.raises(NoSigningKey):
        await grant.handle({"refresh_token": pair["refresh_token"]}, authenticated(client),
                           NOWHERE)

    assert await pool.fetchval(
        "SELECT rotated_at FROM token.refresh_tokens WHERE token_hash = $1",
        credentials.sha256(pair["refresh_token"])) is None
    assert (await refresh(token.http, client, pair["refresh_token"])).status_code == 200
