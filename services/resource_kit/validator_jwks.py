"""Offline validation against the published JWKS (RFC 7517), for callers that accept the trade:
no call per request, but a revoked token stays valid here until it expires (at most an hour).

The key set is fetched once, then again only when a token names a ``kid`` not yet seen (a
rotation), at most once per ``refresh_interval``. The token is checked as RFC 9068 §4 says:
``typ`` ``at+jwt``, ES256 only, signature, ``iss``, ``aud``, ``exp``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt

from services.resource_kit.validation import (
    TokenServiceUnavailable,
    ValidatedToken,
    Validation,
    check_scopes,
)

PREFIX = "otesse_at_"
MAX_TOKEN_LENGTH = 4096


class JwksTokenValidator:
    def __init__(self, jwks_url: str, *, issuer: str, audience: str,
                 refresh_interval: float = 60.0, timeout: float = 3.0) -> None:
        self._url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._refresh_interval = refresh_interval
        self._http = httpx.AsyncClient(timeout=timeout)
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._refresh_interval and self._keys:
                return
            try:
                response = await self._http.get(self._url)
                response.raise_for_status()
                keys = {}
                for jwk in response.json()["keys"]:
                    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
                        keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk, algorithm="ES256").key
            except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWKError) as exc:
                raise TokenServiceUnavailable(f"JWKS: {type(exc).__name__}") from None
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def validate(self, token: str, *, required_scopes: tuple[str, ...] = ()
                       ) -> Validation:
        if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return Validation(False, "malformed")
        compact = token[len(PREFIX):]
        try:
            header = jwt.get_unverified_header(compact)
        except jwt.InvalidTokenError:
            return Validation(False, "malformed")
        if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
            return Validation(False, "malformed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            return Validation(False, "malformed")
        if kid not in self._keys:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            return Validation(False, "bad_signature")
        try:
            claims = jwt.decode(
                compact, key, algorithms=["ES256"], issuer=self._issuer,
                audience=self._audience,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"],
                         "verify_exp": False})
        except jwt.InvalidSignatureError:
            return Validation(False, "bad_signature")
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError):
            return Validation(False, "wrong_issuer_or_audience")
        except jwt.InvalidTokenError:
            return Validation(False, "malformed")
        validated = ValidatedToken(
            subject=str(claims["sub"]), client_id=str(claims["client_id"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            expires_at=int(claims["exp"]), grant_id=str(claims.get("grant_id", "")),
            token_id=str(claims["jti"]))
        if validated.expires_at <= time.time():
            return Validation(False, "expired", validated)
        return check_scopes(validated, required_scopes)

    async def ping(self) -> None:
        self._fetched_at = float("-inf")
        await self._refresh()

    async def close(self) -> None:
        await self._http.aclose()
