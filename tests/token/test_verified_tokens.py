"""ValidateToken remembers verified signatures, and nothing else: a token seen again skips its
ES256 verification, while tampered copies, expiry, revocation, scopes and a withdrawn or replaced
key are all still seen at once (services.common.verified_tokens)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import ec

from otesse.auth.v1 import token_pb2
from services.common import jwt_profile
from services.token.access_tokens import AccessClaims, sign
from services.token.keys.jwk import public_jwk
from services.token.validation import AccessTokenValidator
from tests.token.conftest import Client, TokenService, insert_previous_key, tokens_for
from tests.token.test_servicer import forged, header_swap, tamper_payload, validate


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The kid of every ES256 verification the service makes, as it makes it."""
    made: list[str] = []
    real = jwt_profile.verify

    def counted(signed: jwt_profile.SignedToken,
                public_key: ec.EllipticCurvePublicKey | None) -> AccessClaims:
        made.append(signed.kid)
        return real(signed, public_key)

    monkeypatch.setattr(jwt_profile, "verify", counted)
    yield made


def lifted_signature(genuine: str, other: str) -> str:
    """``other``'s header and claims under ``genuine``'s signature."""
    return other.rsplit(".", 1)[0] + "." + genuine.rsplit(".", 1)[1]


async def test_a_token_seen_again_is_not_verified_again(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        verifications: list[str]) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    results = [await validate(token, pair["access_token"], "bookings:read") for _ in range(3)]
    assert [r.reason for r in results] == [token_pb2.VALIDATION_REASON_VALID] * 3
    assert results[2].subject == results[0].subject and results[2].grant_id
    assert len(verifications) == 1
    # The scopes are the call's own, checked against the remembered claims every time.
    assert (await validate(token, pair["access_token"], "bookings:write")).reason == \
        token_pb2.VALIDATION_REASON_INSUFFICIENT_SCOPE
    assert len(verifications) == 1


async def test_copies_of_a_remembered_token_are_verified_in_full_and_refused(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        verifications: list[str]) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    genuine = pair["access_token"]
    assert (await validate(token, genuine)).active
    remembered = token.components.validator.remembered
    attacks = [
        tamper_payload(genuine),  # wider scope, same signature
        lifted_signature(genuine, forged(token, sub="someone-else")),
        genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"),  # another signature
        header_swap(genuine, {"alg": "ES256", "typ": "at+jwt", "kid": "unknown"}),
    ]
    for attack in attacks:
        assert (await validate(token, attack)).reason == \
            token_pb2.VALIDATION_REASON_BAD_SIGNATURE, attack
    # Every copy was verified (none matched the remembered digest; the unknown kid has no key
    # to verify with), and none of them was remembered.
    assert len(verifications) == 1 + 3
    assert token.components.validator.remembered == remembered
    assert (await validate(token, genuine)).active
    assert len(verifications) == 4


async def test_a_remembered_token_is_still_refused_once_expired_or_revoked(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        verifications: list[str]) -> None:
    expiring = forged(token, exp=int(time.time()) + 1)
    assert (await validate(token, expiring)).active
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()) + 1.0)
    assert (await validate(token, expiring)).reason == token_pb2.VALIDATION_REASON_EXPIRED

    pair = await tokens_for(token, redis, redis_prefix, client)
    assert (await validate(token, pair["access_token"])).active
    revoked = await token.http.post("/oauth/revoke", data={
        "token": pair["refresh_token"], "client_id": client.client_id,
        "client_secret": client.secret})
    assert revoked.status_code == 200
    assert (await validate(token, pair["access_token"])).reason == \
        token_pb2.VALIDATION_REASON_REVOKED
    # Both refusals came from the remembered claims: two verifications for four calls.
    assert len(verifications) == 2


async def test_a_remembered_token_whose_key_is_replaced_or_withdrawn_is_refused(
        token: TokenService, pool: asyncpg.Pool, verifications: list[str]) -> None:
    ring = token.components.ring
    retired = await insert_previous_key(pool, expires_in_seconds=3600)
    await ring.refresh()
    now = int(time.time())
    signed = sign(AccessClaims(iss=token.settings.issuer, sub="user-kid", aud=token.settings.
                               audience, client_id="otesse_ci_kid", scopes=("bookings:read",),
                               iat=now, exp=now + 600, jti="jti-kid",
                               grant_id="00000000-0000-0000-0000-000000000002"), retired)
    assert (await validate(token, signed)).active
    assert (await validate(token, signed)).active
    assert verifications == [retired.kid]

    # Another public key published under the same kid: the remembered claims are not used.
    impostor = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    await pool.execute("UPDATE token.signing_keys SET public_jwk = $2::jsonb WHERE kid = $1",
                       retired.kid, json.dumps({**impostor, "kid": retired.kid}))
    await ring.refresh()
    assert (await validate(token, signed)).reason == token_pb2.VALIDATION_REASON_BAD_SIGNATURE
    assert verifications == [retired.kid] * 2

    # The key back, then withdrawn from the ring altogether.
    await pool.execute("UPDATE token.signing_keys SET public_jwk = $2::jsonb WHERE kid = $1",
                       retired.kid, json.dumps(retired.jwk))
    await ring.refresh()
    assert (await validate(token, signed)).active
    await pool.execute("DELETE FROM token.signing_keys WHERE kid = $1", retired.kid)
    await ring.refresh()
    assert (await validate(token, signed)).reason == token_pb2.VALIDATION_REASON_BAD_SIGNATURE


async def test_nothing_is_remembered_when_the_cache_is_off(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        verifications: list[str]) -> None:
    components = token.components
    validator = AccessTokenValidator(components.ring, components.denylist,
                                     issuer=token.settings.issuer,
                                     audience=token.settings.audience, remembered=0)
    pair = await tokens_for(token, redis, redis_prefix, client)
    for _ in range(3):
        assert (await validator.validate(pair["access_token"])).active
    assert len(verifications) == 3 and validator.remembered == 0


async def test_a_flood_of_distinct_tokens_stays_within_the_bound(
        token: TokenService) -> None:
    components = token.components
    validator = AccessTokenValidator(components.ring, components.denylist,
                                     issuer=token.settings.issuer,
                                     audience=token.settings.audience, remembered=5)
    for n in range(20):
        assert (await validator.validate(forged(token, jti=f"flood-{n}"))).active
        # Forgeries and garbage take no room at all.
        assert not (await validator.validate(tamper_payload(forged(token, jti="x")))).active
        assert not (await validator.validate("otesse_at_" + "A" * 40)).active
    assert validator.remembered == 5
