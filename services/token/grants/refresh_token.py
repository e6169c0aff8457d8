"""The ``refresh_token`` grant with rotation (RFC 6749 §6; RFC 9700 §4.14.2; DESIGN §2.3).

Each use returns a new refresh token and invalidates the old one in one atomic statement, which
also reads the grant and checks the request against it: a refresh that succeeds is that one
round trip to Postgres; only one that does not reads the token's state to say why.
Presenting a rotated token again is treated as theft and revokes the whole grant, except within
the retry window while the successor is unused: then the same old token with the same ``scope``
parameter gets back exactly the same response, rebuilt from the copy sealed under a key derived
from the old token (:mod:`services.token.rotation_retry`); with another ``scope`` it is refused
(``invalid_grant``), minting nothing. Concurrent refreshes of one token therefore yield one new
pair and never a revoked grant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from services.common import credentials, scopes
from services.common.audit import Actor, Origin
from services.common.errors import InvalidGrant, InvalidRequest, InvalidScope
from services.token import rotation_retry
from services.token.access_tokens import AccessTokenIssuer, new_jti
from services.token.client_auth import AuthenticatedClient
from services.token.denylist import DenyList
from services.token.grants.base import Grant, mint_pair
from services.token.metrics import GRANTS_REVOKED, REFRESH_RETRIES
from services.token.store import GrantStore, RefreshRecord, RevokedBy

log = logging.getLogger("otesse.token.grants")
_INVALID = "The refresh token is invalid, expired or revoked."
_ALREADY_USED = ("The refresh token was already used. A retry gets the same response only with "
                 "the same scope parameter; use the newest refresh token.")


@dataclass(frozen=True)
class RefreshRequest:
    refresh_token: str
    # None: the scope originally granted (RFC 6749 §6).
    scopes: tuple[str, ...] | None


class RefreshTokenGrant(Grant[RefreshRequest]):
    grant_type = "refresh_token"

    def __init__(self, *, store: GrantStore, access_tokens: AccessTokenIssuer,
                 denylist: DenyList, refresh_ttl: int, retry_window: int) -> None:
        self._store = store
        self._access_tokens = access_tokens
        self._denylist = denylist
        self._refresh_ttl = refresh_ttl
        self._retry_window = retry_window

    def validate(self, params: Mapping[str, str], client: AuthenticatedClient,
                 ) -> RefreshRequest:
        token = params.get("refresh_token")
        if token is None:
            raise InvalidRequest("The refresh_token parameter is required.")
        requested: tuple[str, ...] | None = None
        if "scope" in params:
            try:
                requested = scopes.parse(params["scope"])
            except ValueError:
                raise InvalidScope("The scope parameter is malformed.") from None
            if not requested or scopes.unknown(requested):
                raise InvalidScope("The scope parameter names an unknown scope.")
        # The checksum refuses a mistyped or made-up token without a store lookup.
        if not credentials.is_well_formed(token, credentials.REFRESH_TOKEN_PREFIX):
            raise InvalidGrant(_INVALID)
        return RefreshRequest(refresh_token=token, scopes=requested)

    async def issue(self, request: RefreshRequest, client: AuthenticatedClient,
                    origin: Origin) -> bytes:
        token_hash = credentials.sha256(request.refresh_token)
        # A rotation that commits must be answered: no signing key, no rotation.
        self._access_tokens.check_ready()
        # Everything the new pair needs but the grant is chosen first, so the one statement
        # that checks and rotates also stores the sealed copy (rotation_retry).
        successor = rotation_retry.Successor(
            refresh_token=credentials.new_credential(credentials.REFRESH_TOKEN_PREFIX),
            jti=new_jti(), iat=int(time.time()))
        sealed = rotation_retry.seal(
            successor, old_refresh_token=request.refresh_token, old_hash=token_hash,
            requested_scopes=request.scopes) if self._retry_window else None
        successor_hash = credentials.sha256(successor.refresh_token)
        for _attempt in range(2):
            rotation = await self._store.rotate_refresh(
                token_hash=token_hash, successor_hash=successor_hash,
                successor_sealed=sealed, refresh_ttl=self._refresh_ttl,
                client_id=client.client_id, allowed_scopes=client.allowed_scopes,
                requested_scopes=request.scopes, origin=origin)
            if rotation is not None:
                return self._answer(successor, rotation.grant_id, rotation.user_id, client,
                                    rotation.scopes)
            # Nothing rotated: read why, and answer as that state demands.
            record = await self._store.find_refresh(token_hash=token_hash,
                                                    retry_window=self._retry_window)
            granted = self._check(record, request, client)
            assert record is not None
            if record.rotated:
                # A retry, or a reuse (which revokes).
                return await self._rotated_again(record, request, token_hash, client, granted,
                                                 origin)
            # Still there to rotate: what stopped the statement is gone (a concurrent rotation
            # rolled back); once more.
        raise InvalidGrant(_INVALID)

    def _answer(self, successor: rotation_retry.Successor, grant_id: str, user_id: str,
                client: AuthenticatedClient, granted: tuple[str, ...]) -> bytes:
        response, _ = mint_pair(self._access_tokens, user_id=user_id,
                                client_id=client.client_id, scopes=granted, grant_id=grant_id,
                                refresh_token=successor.refresh_token, jti=successor.jti,
                                iat=successor.iat)
        return response.to_json()

    def _check(self, record: RefreshRecord | None, request: RefreshRequest,
               client: AuthenticatedClient) -> tuple[str, ...]:
        # RFC 6749 §6: "validate the refresh token and ensure that it was issued to the
        # authenticated client".
        if (record is None or record.client_id != client.client_id or record.grant_revoked
                or record.expired):
            raise InvalidGrant(_INVALID)
        # RFC 6749 §6: "The requested scope MUST NOT include any scope not originally granted
        # by the resource owner, and if omitted is treated as equal to the scope originally
        # granted". Scopes the client may no longer request are dropped as well.
        allowed = [scope for scope in record.scopes if scope in client.allowed_scopes]
        if request.scopes is None:
            granted = tuple(allowed)
        else:
            if any(scope not in allowed for scope in request.scopes):
                raise InvalidScope("The requested scope exceeds the scope granted.")
            granted = tuple(scope for scope in allowed if scope in request.scopes)
        if not granted:
            raise InvalidScope("No scope granted to this refresh token remains allowed.")
        return granted

    async def _rotated_again(self, record: RefreshRecord, request: RefreshRequest,
                             token_hash: bytes, client: AuthenticatedClient,
                             granted: tuple[str, ...], origin: Origin) -> bytes:
        if self._retry_window and record.retry_allowed and record.successor_sealed:
            try:
                sealed = rotation_retry.open_sealed(record.successor_sealed,
                                                    old_refresh_token=request.refresh_token,
                                                    old_hash=token_hash,
                                                    requested_scopes=request.scopes)
                REFRESH_RETRIES.inc()
                if isinstance(sealed, bytes):
                    return sealed  # the whole body, as an earlier release sealed it
                # The same pair again: the same claims, signed into the same bytes.
                return self._answer(sealed, record.grant_id, record.user_id, client, granted)
            except rotation_retry.DifferentRequest:
                # The holder of the old token, within the window, asking for something else:
                # a retry that is not the same request gets no pair, and is no theft either.
                raise InvalidGrant(_ALREADY_USED) from None
            except InvalidTag:
                log.error("sealed refresh response does not open", extra={
                    "grant_id": record.grant_id})
        # RFC 9700 §4.14.2: if a refresh token is compromised and subsequently used by both
        # the attacker and the legitimate client, one of them will present an invalidated
        # refresh token, which will inform the authorization server of the breach; the
        # authorization server revokes the active refresh token (here: the whole grant).
        result = await self._store.revoke_grants(
            grant_id=record.grant_id,
            by=RevokedBy(actor=Actor.system(), reason="refresh_token_reuse", origin=origin,
                         reuse_presented_by=Actor.client(client.client_id)))
        GRANTS_REVOKED.labels("refresh_reuse").inc(result.revoked)
        await self._denylist.deny(result.deny)
        log.warning("rotated refresh token reused; grant revoked", extra={
            "grant_id": record.grant_id, "client_id": client.client_id})
        raise InvalidGrant(_INVALID)
