"""Access tokens as an independent JOSE library sees them (joserfc, not pyjwt) against the served
JWKS, and signing-key rotation: a key is published before it signs, and tokens signed by a
retired key stay valid until they expire."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet

from otesse.auth.v1 import token_pb2
from services.common.audit import Actor
from services.token.access_tokens import AccessClaims, sign
from services.token.keys import (
    KeyRing,
    NextKeyTooYoung,
    PgKeyStore,
    WrongKek,
    open_private_key,
    public_jwk,
)
from tests.token.conftest import (
    KEK,
    Client,
    TokenService,
    insert_previous_key,
    segments,
    tokens_for,
)


async def served_jwks(token: TokenService) -> dict[str, Any]:
    response = await token.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def joserfc_claims(token: TokenService, access_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(await served_jwks(token))  # type: ignore[arg-type]
    decoded = jwt.decode(access_token[len("otesse_at_"):], keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    claims: dict[str, Any] = dict(decoded.claims)
    return claims


async def test_access_token_verifies_with_joserfc_against_the_jwks(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    before = int(time.time())
    pair = await tokens_for(token, redis, redis_prefix, client, user_id="user-jose")
    header, _ = segments(pair["access_token"])
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": header["kid"]}
    claims = await joserfc_claims(token, pair["access_token"])
    assert set(claims) == {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti",
                           "grant_id"}
    assert claims["iss"] == token.settings.issuer == "http://localhost:8000"
    assert claims["aud"] == "https://api.otesse.com"
    assert claims["sub"] == "user-jose"
    assert claims["client_id"] == client.client_id
    assert claims["scope"] == pair["scope"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 3600
    validated = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=pair["access_token"]))
    assert (validated.grant_id, validated.token_id) == (claims["grant_id"], claims["jti"])


async def test_jti_is_unique(token: TokenService, redis: aioredis.Redis, redis_prefix: str,
                             client: Client) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = await tokens_for(token, redis, redis_prefix, client)
    assert segments(first["access_token"])[1]["jti"] != segments(second["access_token"])[1]["jti"]


async def test_jwks_publishes_next_and_current_public_keys_only(token: TokenService) -> None:
    jwks = await served_jwks(token)
    states = {key.kid: key.state for key in
              (token.components.ring.get(jwk["kid"]) for jwk in jwks["keys"]) if key}
    assert "next" in states.values() and "current" in states.values()
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256",
                                                                    "sig")
        assert "d" not in jwk


async def test_private_keys_are_stored_encrypted_under_the_kek(
        token: TokenService, pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT kid, private_key FROM token.signing_keys")
    assert rows
    for row in rows:
        with pytest.raises(ValueError):
            serialization.load_der_private_key(row["private_key"], password=None)
        with pytest.raises(WrongKek):
            open_private_key(row["private_key"], kek=os.urandom(32), kid=row["kid"])
        # Bound to its kid: a sealed key moved to another row does not open.
        with pytest.raises(WrongKek):
            open_private_key(row["private_key"], kek=base64.b64decode(KEK), kid="other")
        opened = open_private_key(row["private_key"], kek=base64.b64decode(KEK), kid=row["kid"])
        assert public_jwk(opened.public_key())["kid"] == row["kid"]


async def test_rotation_keeps_old_tokens_valid_and_replicas_agree(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    ring = token.components.ring
    old = await tokens_for(token, redis, redis_prefix, client)
    old_kid = segments(old["access_token"])[0]["kid"]
    next_kid = next(jwk["kid"] for jwk in (await served_jwks(token))["keys"]
                    if ring.get(jwk["kid"]) and ring.get(jwk["kid"]).state == "next")  # type: ignore[union-attr]
    store = PgKeyStore(pool)

    assert await store.rotate(kek=base64.b64decode(KEK), retire_after_seconds=3700,
                              min_next_age_seconds=0, actor=Actor.operator())
    await ring.refresh()
    replica = KeyRing(store, kek=base64.b64decode(KEK))
    await replica.refresh()

    new = await tokens_for(token, redis, redis_prefix, client)
    new_kid = segments(new["access_token"])[0]["kid"]
    # The key that signs now is the one published as "next" before the rotation.
    assert new_kid == next_kid != old_kid
    assert replica.current().kid == new_kid
    assert replica.jwks() == ring.jwks()
    published = {jwk["kid"] for jwk in (await served_jwks(token))["keys"]}
    assert {old_kid, new_kid} < published and len(published) >= 3
    for pair in (old, new):
        await joserfc_claims(token, pair["access_token"])
        result = await token.grpc.ValidateToken(
            token_pb2.ValidateTokenRequest(token=pair["access_token"]))
        assert result.active, result


async def test_rotation_by_racing_replicas_happens_once(token: TokenService,
                                                        pool: asyncpg.Pool) -> None:
    store = PgKeyStore(pool)
    await token.components.ring.refresh()
    current = token.components.ring.current().kid
    results = await asyncio.gather(*(store.rotate(kek=base64.b64decode(KEK),
                                                  retire_after_seconds=3700,
                                                  min_next_age_seconds=0,
                                                  actor=Actor.system(),
                                                  expected_current=current)
                                     for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    counts = await pool.fetch("SELECT state, count(*) FROM token.signing_keys"
                              " WHERE state IN ('next', 'current') GROUP BY state")
    assert {row["state"]: row["count"] for row in counts} == {"next": 1, "current": 1}
    await token.components.ring.refresh()


async def test_previous_key_is_accepted_until_it_expires(
        token: TokenService, pool: asyncpg.Pool) -> None:
    ring = token.components.ring
    retired = await insert_previous_key(pool, expires_in_seconds=3600)
    await ring.refresh()
    now = int(time.time())
    signed = sign(AccessClaims(iss=token.settings.issuer, sub="user-prev",
                               aud=token.settings.audience, client_id="otesse_ci_prev",
                               scopes=("bookings:read",), iat=now, exp=now + 600,
                               jti="jti-prev", grant_id="00000000-0000-0000-0000-000000000001"),
                  retired)
    assert retired.kid in {jwk["kid"] for jwk in (await served_jwks(token))["keys"]}
    assert (await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=signed))).active
    assert ring.current().kid != retired.kid  # published and accepted, but never signing

    await pool.execute("UPDATE token.signing_keys SET expires_at = now() - interval '1 second'"
                       " WHERE kid = $1", retired.kid)
    await ring.refresh()

    assert retired.kid not in {jwk["kid"] for jwk in (await served_jwks(token))["keys"]}
    result = await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(token=signed))
    assert result.reason == token_pb2.VALIDATION_REASON_BAD_SIGNATURE


async def test_a_next_key_too_young_for_jwks_caches_does_not_sign(
        token: TokenService, pool: asyncpg.Pool) -> None:
    store = PgKeyStore(pool)
    await store.rotate(kek=base64.b64decode(KEK), retire_after_seconds=3700,
                       min_next_age_seconds=0, actor=Actor.operator())  # a brand-new next key
    before = {key.kid: key.state for key in await store.published()}
    with pytest.raises(NextKeyTooYoung):
        await store.rotate(kek=base64.b64decode(KEK), retire_after_seconds=3700,
                           min_next_age_seconds=token.settings.key_publish_lead_seconds,
                           actor=Actor.operator())
    assert {key.kid: key.state for key in await store.published()} == before
    await token.components.ring.refresh()


async def test_keys_rotate_by_themselves_when_due(token: TokenService,
                                                  pool: asyncpg.Pool) -> None:
    ring = token.components.ring
    await pool.execute("UPDATE token.signing_keys SET created_at = now() - interval '2 days',"
                       " activated_at = CASE WHEN state = 'current' THEN now() - interval"
                       " '2 days' END WHERE state IN ('current', 'next')")
    await ring.refresh()
    old = ring.current().kid
    upcoming = next(kid for kid in (jwk["kid"] for jwk in ring.jwks()["keys"])
                    if ring.get(kid) and ring.get(kid).state == "next")  # type: ignore[union-attr]

    await ring.rotate_if_due(rotation_seconds=24 * 3600, retire_after_seconds=3700)

    assert ring.current().kid == upcoming != old
    previous = ring.get(old)
    assert previous is not None and previous.state == "previous"
    # Not due any more: a second check changes nothing.
    await ring.rotate_if_due(rotation_seconds=24 * 3600, retire_after_seconds=3700)
    assert ring.current().kid == upcoming
