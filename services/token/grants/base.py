"""The contract every grant type keeps (RFC 6749 §4.1.3, §6), and what they all answer.

A grant declares its ``grant_type``; ``validate`` checks the request's parameters and raises
before any side effect; ``issue`` consumes (a code, a refresh token), writes and answers with a
:class:`TokenResponse` (RFC 6749 §5.1) minted by :func:`mint_pair`. ``origin`` (the client's
address and the request id) goes into the audit events the writes record.
"""


from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar

from services.common import credentials
from services.common.audit import Origin
from services.token.access_tokens import AccessTokenIssuer
from services.token.client_auth import AuthenticatedClient

GrantType = Literal["authorization_code", "refresh_token"]
R = TypeVar("R")


@dataclass(frozen=True)
class TokenResponse:
    """RFC 6749 §5.1, in exactly the shape the public documentation shows."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: str

    def to_json(self) -> bytes:
        return json.dumps({
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }, separators=(",", ":")).encode("utf-8")


def mint_pair(issuer: AccessTokenIssuer, *, user_id: str, client_id: str,
              scopes: tuple[str, ...], grant_id: str | None = None,
              refresh_token: str | None = None, jti: str | None = None,
              iat: int | None = None) -> tuple[TokenResponse, str]:
    """A new access token and refresh token, or the pair a rotation chose (its refresh token,
    and its access token's ``jti`` and ``iat``: see :meth:`AccessTokenIssuer.mint`); returns
    the response and the grant id."""
    grant_id = grant_id or str(uuid.uuid4())
    access_token, _ = issuer.mint(user_id=user_id, client_id=client_id, scopes=scopes,
                                  grant_id=grant_id, jti=jti, iat=iat)
    response = TokenResponse(access_token=access_token,
                             refresh_token=refresh_token or credentials.new_credential(
                                 credentials.REFRESH_TOKEN_PREFIX),
                             expires_in=issuer.ttl, scope=" ".join(scopes))
    return response, grant_id


class Grant(ABC, Generic[R]):
    grant_type: ClassVar[GrantType]

    @abstractmethod
    def validate(self, params: Mapping[str, str], client: AuthenticatedClient) -> R:
        """Every check that needs no store; raises an OAuth error before any side effect."""

    @abstractmethod
    async def issue(self, request: R, client: AuthenticatedClient, origin: Origin) -> bytes:
        """Consumes the grant, writes, and returns the JSON response body."""

    async def handle(self, params: Mapping[str, str], client: AuthenticatedClient,
                     origin: Origin) -> bytes:
        return await self.issue(self.validate(params, client), client, origin)
