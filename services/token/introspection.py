"""Token introspection (RFC 7662) for confidential clients, about their own tokens only.

RFC 7662 §2.2: "If the introspection call is properly authorized but the token is not active,
does not exist on this server, or the protected resource is not allowed to introspect this
particular token, then the authorization server MUST return an introspection response with the
"active" field set to "false"" — so another client's token answers exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.common import credentials
from services.common.errors import InvalidRequest
from services.common.http import NO_STORE
from services.token import access_tokens, params
from services.token.client_auth import AuthenticatedClient, ClientAuthenticator
from services.token.store import GrantStore
from services.token.validation import AccessTokenValidator

INACTIVE: dict[str, Any] = {"active": False}


class Introspector:
    def __init__(self, *, store: GrantStore, validator: AccessTokenValidator, issuer: str,
                 authenticator: ClientAuthenticator, max_body_bytes: int) -> None:
        self._store = store
        self._validator = validator
        self._issuer = issuer
        self._authenticator = authenticator
        self._max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        """``POST /oauth/introspect``."""
        values = await params.read(request, max_bytes=self._max_body_bytes)
        # RFC 7662 §2.1: "the endpoint MUST also require some form of authorization"; public
        # clients cannot authenticate, so they cannot introspect.
        client = await self._authenticator.authenticate(
            authorization=request.headers.get("authorization"), params=values,
            allow_public=False)
        token = values.get("token")
        if token is None:
            raise InvalidRequest("The token parameter is required.")
        return JSONResponse(await self.introspect(token=token, client=client), headers=NO_STORE)

    async def introspect(self, *, token: str, client: AuthenticatedClient) -> dict[str, Any]:
        if token.startswith(credentials.REFRESH_TOKEN_PREFIX):
            return await self._refresh_token(token, client)
        if token.startswith(access_tokens.PREFIX):
            return await self._access_token(token, client)
        return INACTIVE

    async def _access_token(self, token: str, client: AuthenticatedClient) -> dict[str, Any]:
        validation = await self._validator.validate(token)
        claims = validation.claims
        if not validation.active or claims is None or claims.client_id != client.client_id:
            return INACTIVE
        return {"active": True, "scope": " ".join(claims.scopes), "client_id": claims.client_id,
                "sub": claims.sub, "aud": claims.aud, "iss": claims.iss, "exp": claims.exp,
                "iat": claims.iat, "jti": claims.jti, "token_type": "Bearer",
                "grant_id": claims.grant_id}

    async def _refresh_token(self, token: str, client: AuthenticatedClient) -> dict[str, Any]:
        if not credentials.is_well_formed(token, credentials.REFRESH_TOKEN_PREFIX):
            return INACTIVE
        info = await self._store.refresh_token_info(token_hash=credentials.sha256(token))
        if info is None or not info.active or info.client_id != client.client_id:
            return INACTIVE
        return {"active": True, "scope": " ".join(info.scopes), "client_id": info.client_id,
                "sub": info.user_id, "iss": self._issuer,
                "exp": int(info.expires_at.timestamp()),
                "iat": int(info.created_at.timestamp()), "grant_id": info.grant_id}
