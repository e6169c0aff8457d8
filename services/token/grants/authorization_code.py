"""The ``authorization_code`` grant: exchanging a code for tokens (RFC 6749 §4.1.3; RFC 7636
§4.5–4.6 PKCE).

The code is taken from Redis by one atomic script that leaves a "used" marker in its place
(:mod:`services.token.codes`): of any number of concurrent exchanges one gets the record. A code
that is presented and fails a check stays consumed. A code presented again while its marker
lives is a replay: it is refused and revokes the grant the first exchange produced, however
late that exchange commits (see ``GrantStore.revoke_replayed_code``). A code never issued or
expired costs one Redis round trip and nothing else.

RFC 6749 §4.1.2 asks that a code used more than once be denied and everything it issued be
revoked; it names no winner among concurrent uses. So when one code is presented several times
at once, at most one exchange answers with tokens, and once the replays are answered no token
of that code works: either the first exchange committed and its grant is revoked, or a replay
came first and the first exchange issues nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from otesse.auth.v1.authorization_code_pb2 import AuthorizationCodeRecord
from services.common import credentials
from services.common.audit import Origin
from services.common.errors import InvalidGrant, InvalidRequest
from services.common.redis_lean import LeanRedis
from services.token import pkce
from services.token.access_tokens import AccessTokenIssuer
from services.token.client_auth import AuthenticatedClient
from services.token.codes import CodeConsumer
from services.token.denylist import DenyList
from services.token.grants.base import Grant, mint_pair
from services.token.metrics import GRANTS_REVOKED
from services.token.store import AuthorizationRevoked, CodeAlreadyExchanged, GrantStore

log = logging.getLogger("otesse.token.grants")
_MAX_CODE_LENGTH = 256
_INVALID_CODE = "The authorization code is invalid, expired or already used."


@dataclass(frozen=True)
class CodeRequest:
    code: str
    redirect_uri: str
    code_verifier: str | None


class AuthorizationCodeGrant(Grant[CodeRequest]):
    grant_type = "authorization_code"

    def __init__(self, *, redis: LeanRedis, redis_prefix: str, store: GrantStore,
                 access_tokens: AccessTokenIssuer, denylist: DenyList, refresh_ttl: int) -> None:
        self._codes = CodeConsumer(redis, redis_prefix=redis_prefix)
        self._store = store
        self._access_tokens = access_tokens
        self._denylist = denylist
        self._refresh_ttl = refresh_ttl

    def validate(self, params: Mapping[str, str], client: AuthenticatedClient) -> CodeRequest:
        code = params.get("code")
        if code is None:
            raise InvalidRequest("The code parameter is required.")
        redirect_uri = params.get("redirect_uri")
        # RFC 6749 §4.1.3: redirect_uri is "REQUIRED, if the "redirect_uri" parameter was
        # included in the authorization request", and Otesse's always includes it.
        if redirect_uri is None:
            raise InvalidRequest("The redirect_uri parameter is required.")
        verifier = params.get("code_verifier")
        if verifier is not None and not pkce.is_valid_verifier(verifier):
            raise InvalidRequest("code_verifier must be 43 to 128 unreserved characters.")
        if client.client_type == "public" and verifier is None:
            # DESIGN §4: PKCE is required for public clients.
            raise InvalidRequest("Public clients must send a code_verifier (PKCE).")
        if len(code) > _MAX_CODE_LENGTH:
            raise InvalidGrant(_INVALID_CODE)
        return CodeRequest(code=code, redirect_uri=redirect_uri, code_verifier=verifier)

    async def issue(self, request: CodeRequest, client: AuthenticatedClient,
                    origin: Origin) -> bytes:
        consumed = await self._codes.consume(request.code)
        if consumed.outcome == "unknown":
            raise InvalidGrant(_INVALID_CODE)
        code_hash = credentials.sha256(request.code)
        if consumed.outcome == "used":
            # RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization
            # server MUST deny the request and SHOULD revoke (when possible) all tokens previously
            # issued based on that authorization code."
            await self._revoke_replayed(code_hash, client, origin)
            raise InvalidGrant(_INVALID_CODE)
        try:
            record = AuthorizationCodeRecord.FromString(consumed.record)
        except DecodeError:
            raise InvalidGrant(_INVALID_CODE) from None
        # RFC 6749 §4.1.3: "ensure that the authorization code was issued to the authenticated
        # confidential client, or if the client is public, ensure that the code was issued to
        # "client_id" in the request"
        if record.client_id != client.client_id:
            raise InvalidGrant(_INVALID_CODE)
        # RFC 6749 §4.1.3: "if included ensure that their values are identical."
        if record.redirect_uri != request.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the authorization request.")
        self._check_pkce(record, request, client)
        scopes = tuple(record.scopes)
        response, grant_id = mint_pair(self._access_tokens, user_id=record.user_id,
                                       client_id=client.client_id, scopes=scopes)
        try:
            await self._store.create_grant(
                grant_id=grant_id, user_id=record.user_id, client_id=client.client_id,
                scopes=scopes, code_hash=code_hash,
                refresh_hash=credentials.sha256(response.refresh_token),
                refresh_ttl=self._refresh_ttl,
                code_issued_at=record.issued_at.ToMicroseconds() / 1e6, origin=origin)
        except (CodeAlreadyExchanged, AuthorizationRevoked):
            raise InvalidGrant(_INVALID_CODE) from None
        return response.to_json()

    @staticmethod
    def _check_pkce(record: AuthorizationCodeRecord, request: CodeRequest,
                    client: AuthenticatedClient) -> None:
        if record.code_challenge:
            # RFC 7636 §4.6: "If the values are not equal, an error response indicating
            # "invalid_grant" … MUST be returned."
            if request.code_verifier is None or not pkce.verify(
                    verifier=request.code_verifier, challenge=record.code_challenge,
                    method=record.code_challenge_method):
                raise InvalidGrant("The code_verifier does not match the code_challenge.")
            return
        if client.client_type == "public":
            raise InvalidGrant(_INVALID_CODE)
        # RFC 9700 §2.1.1: the server MUST reject a token request with a code_verifier when
        # the authorization request carried no code_challenge (a PKCE downgrade).
        if request.code_verifier is not None:
            raise InvalidGrant("A code_verifier was sent but no code_challenge was.")

    async def _revoke_replayed(self, code_hash: bytes, client: AuthenticatedClient,
                               origin: Origin) -> None:
        result = await self._store.revoke_replayed_code(
            code_hash=code_hash, presented_by=client.client_id, origin=origin)
        if result.deny.grants:
            GRANTS_REVOKED.labels("code_replay").inc(result.revoked)
            await self._denylist.deny(result.deny)
            log.warning("authorization code replayed; its grant is revoked", extra={
                "grant_id": result.deny.grants[0].grant_id, "client_id": client.client_id})
        else:
            log.warning("authorization code replayed before its exchange committed; that "
                        "exchange will issue nothing", extra={"client_id": client.client_id})
