"""Validating an access token as a resource server must (RFC 9068 §4; RFC 6750 §3.1).

Signature (one ES256 verification against the in-memory key ring), ``iss``, ``aud``, ``exp``,
revocation (one Redis round trip, :mod:`services.token.denylist`) and the required scopes.
Postgres is asked only when Redis cannot answer; when neither can, the check raises (callers
answer UNAVAILABLE / 503): an unverifiable revocation status never counts as active.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.common import jwt_profile
from services.common.token_reasons import Reason
from services.token.access_tokens import AccessClaims, TokenRejected, verify
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


class AccessTokenValidator:
    def __init__(self, ring: KeyRing, denylist: DenyList, *, issuer: str, audience: str) -> None:
        self._ring = ring
        self._denylist = denylist
        self._issuer = issuer
        self._audience = audience

    async def validate(self, token: str, required_scopes: Iterable[str] = ()) -> Validation:
        validation = await self._validate(token, required_scopes)
        VALIDATIONS.labels(validation.reason).inc()
        return validation

    async def _validate(self, token: str, required_scopes: Iterable[str]) -> Validation:
        try:
            claims = verify(token, self._ring)
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
