"""Validating an access token as a resource server must (RFC 9068 §4; RFC 6750 §3.1).

Signature (one ES256 verification against the in-memory key ring), ``iss``, ``aud``, ``exp``,
revocation (one Redis round trip, :mod:`services.token.denylist`) and the required scopes.
Postgres is asked only when Redis cannot answer; when neither can, the check raises (callers
answer UNAVAILABLE / 503): an unverifiable revocation status never counts as active.

A token seen again skips the signature's verification, the costliest step
(:mod:`services.common.verified_tokens`): its claims are remembered with the key that verified
them, and used only while the ring still publishes that very key (a key retired or withdrawn
takes its tokens' entries with it) and while the token keeps being presented (30 s at most
between two calls). Everything else is checked at every call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.common import jwt_profile, verified_tokens
from services.common.token_reasons import Reason
from services.common.verified_tokens import VerifiedTokens
from services.token.access_tokens import AccessClaims, TokenRejected, verify_with_key
from services.token.denylist import DenyList
from services.token.keys import KeyRing
from services.token.metrics import VALIDATIONS


@dataclass(frozen=True)
class Validation:
    reason: Reason
    # Set whenever the signature verified, so callers can say who was refused.
    claims: AccessClaims | None

    @property
    def active(self) -> bool:
        return self.reason == "valid"


# A remembered token not presented again within this is forgotten: a client's burst of API
# calls shares one verification, and the cache holds about (new tokens per second) × this.
REMEMBERED_IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class _Verified:
    """What a verified signature vouched for, and the key (its JWK) that verified it."""

    claims: AccessClaims
    kid: str
    jwk: dict[str, str]


class AccessTokenValidator:
    def __init__(self, ring: KeyRing, denylist: DenyList, *, issuer: str, audience: str,
                 remembered: int) -> None:
        self._ring = ring
        self._denylist = denylist
        self._issuer = issuer
        self._audience = audience
        self._verified: VerifiedTokens[_Verified] = VerifiedTokens(
            remembered, idle_seconds=REMEMBERED_IDLE_SECONDS)

    @property
    def remembered(self) -> int:
        """How many verified tokens are remembered now."""
        return len(self._verified)

    async def validate(self, token: str, required_scopes: Iterable[str] = ()) -> Validation:
        validation = await self._validate(token, required_scopes)
        VALIDATIONS.labels(validation.reason).inc()
        return validation

    async def _validate(self, token: str, required_scopes: Iterable[str]) -> Validation:
        try:
            claims = self.verified_claims(token)
        except TokenRejected as exc:
            return Validation(exc.problem, None)
        problem = jwt_profile.check(claims, issuer=self._issuer, audience=self._audience,
                                    now=time.time())
        if problem is not None:
            return Validation(problem, claims)
        if await self._denylist.is_revoked(jti=claims.jti, grant_id=claims.grant_id):
            return Validation("revoked", claims)
        if any(scope not in claims.scopes for scope in required_scopes):
            return Validation("insufficient_scope", claims)
        return Validation("valid", claims)

    def verified_claims(self, token: str) -> AccessClaims:
        """The token's claims once its signature is known good; raises :class:`TokenRejected`."""
        digest = verified_tokens.digest(token)
        known = self._verified.get(digest)
        if known is not None:
            key = self._ring.get(known.kid)
            if key is not None and key.jwk == known.jwk:
                return known.claims
            # The key is gone from the ring, or another key took its kid: verify again.
            self._verified.forget(digest)
        claims, key = verify_with_key(token, self._ring)
        self._verified.put(digest, _Verified(claims, key.kid, key.jwk))
        return claims
