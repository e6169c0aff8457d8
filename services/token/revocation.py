"""Token revocation (RFC 7009).

A refresh token revokes its whole grant, and with it every access token of the grant (RFC 7009
§2.1: the server "SHOULD also invalidate all access tokens based on the same authorization
grant"); an access token is revoked on its own. Revocation is recorded in Postgres first, then
put on the Redis deny-list, so it takes effect at once and survives the loss of Redis.
Unknown, malformed or expired tokens change nothing and still answer 200 (RFC 7009 §2.2:
"invalid tokens do not cause an error response"). A valid token issued to another client is
refused with ``unauthorized_client`` and left alone (RFC 7009 §2.1): the caller already holds
the token, so saying it is not theirs reveals nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from services.common import client_ip, credentials
from services.common.audit import Actor, Origin
from services.common.client_ip import Network
from services.common.errors import InvalidRequest, UnauthorizedClient
from services.common.http import NO_STORE
from services.token import access_tokens, params
from services.token.access_tokens import TokenRejected
from services.token.client_auth import AuthenticatedClient, ClientAuthenticator
from services.token.denylist import DenyList
from services.token.keys import KeyRing
from services.token.metrics import GRANTS_REVOKED
from services.token.revocations import Revocations, TokenRevocation
from services.token.store import GrantStore, RevokedBy


class Revoker:
    def __init__(self, *, store: GrantStore, denylist: DenyList, ring: KeyRing, issuer: str,
                 authenticator: ClientAuthenticator, max_body_bytes: int,
                 trusted_proxies: Sequence[Network]) -> None:
        self._store = store
        self._denylist = denylist
        self._ring = ring
        self._issuer = issuer
        self._authenticator = authenticator
        self._max_body_bytes = max_body_bytes
        self._trusted_proxies = trusted_proxies

    async def handle(self, request: Request) -> Response:
        """``POST /oauth/revoke``."""
        values = await params.read(request, max_bytes=self._max_body_bytes)
        client = await self._authenticator.authenticate(
            authorization=request.headers.get("authorization"), params=values)
        token = values.get("token")
        if token is None:
            raise InvalidRequest("The token parameter is required.")
        origin = Origin.of(client_ip.of_request(request, self._trusted_proxies))
        await self.revoke(token=token, client=client, origin=origin)
        # RFC 7009 §2.2: "The authorization server responds with HTTP status code 200 if the
        # token has been revoked successfully or if the client submitted an invalid token."
        return Response(b"", status_code=200, headers=NO_STORE)

    async def revoke(self, *, token: str, client: AuthenticatedClient, origin: Origin) -> None:
        # RFC 7009 §2.1: token_type_hint is only a hint; the token's shape says what it is.
        if token.startswith(credentials.REFRESH_TOKEN_PREFIX):
            await self._revoke_refresh_token(token, client, origin)
        elif token.startswith(access_tokens.PREFIX):
            await self._revoke_access_token(token, client, origin)

    async def _revoke_refresh_token(self, token: str, client: AuthenticatedClient,
                                    origin: Origin) -> None:
        if not credentials.is_well_formed(token, credentials.REFRESH_TOKEN_PREFIX):
            return
        info = await self._store.refresh_token_info(token_hash=credentials.sha256(token))
        if info is None:
            return
        _check_owner(info.client_id, client)
        result = await self._store.revoke_grants(
            grant_id=info.grant_id, by=RevokedBy(actor=Actor.client(client.client_id),
                                                 reason="client_revoked_token", origin=origin))
        GRANTS_REVOKED.labels("revocation").inc(result.revoked)
        await self._denylist.deny(result.deny)

    async def _revoke_access_token(self, token: str, client: AuthenticatedClient,
                                   origin: Origin) -> None:
        try:
            claims = access_tokens.verify(token, self._ring)
        except TokenRejected:
            return
        if claims.iss != self._issuer or claims.exp <= time.time():
            return
        _check_owner(claims.client_id, client)
        await self._store.revoke_access_token(jti=claims.jti, grant_id=claims.grant_id,
                                              client_id=claims.client_id, user_id=claims.sub,
                                              expires_at=claims.exp, origin=origin)
        await self._denylist.deny(Revocations(grants=[], tokens=[
            TokenRevocation(jti=claims.jti, expires_at=float(claims.exp))]))


def _check_owner(owner_client_id: str, client: AuthenticatedClient) -> None:
    # RFC 7009 §2.1: the server "verifies whether the token was issued to the client making the
    # revocation request. If this validation fails, the request is refused and the client is
    # informed of the error".
    if owner_client_id != client.client_id:
        raise UnauthorizedClient("The token was not issued to this client.")
