"""Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3).

Methods: ``client_secret_basic`` (RFC 6749 §2.3.1, id and secret form-encoded before Basic
encoding), ``client_secret_post`` (both in the body) and ``none`` (a public client names itself
with ``client_id`` and proves possession with PKCE instead, RFC 7636). Secrets are checked by
the registry (constant-time there); a successful check is remembered in-process for a few
seconds, keyed by the client id and the secret's SHA-256. A registry that cannot be reached is
``503 temporarily_unavailable``, never ``401``.

That memory never outlives a change of the client: the registry announces every rotation,
update and deletion (:mod:`services.common.client_changes`), and each replica forgets that
client as the change commits, so a rotated-out or deleted secret stops working at once on every
replica. While the announcements cannot be heard, nothing is remembered or served from memory;
and an answer the registry gave before a change is never remembered after it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

import grpc
from grpc import aio

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import credentials
from services.common.client_cache import ClientCache, ClientChanges
from services.common.errors import InvalidClient, InvalidRequest

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
ClientType = Literal["confidential", "public"]

_REJECTED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.INVALID_ARGUMENT}
_MAX_ID_LENGTH = 128
_MAX_SECRET_LENGTH = 512
_CACHE_LIMIT = 10_000
# The registry answers within its own database bound (services.common.db), plus a margin.
_REGISTRY_TIMEOUT = 3.0


class BasicAuthFailed(InvalidClient):
    """Client authentication through the Authorization header failed."""

    # RFC 6749 §5.2: "If the client attempted to authenticate via the "Authorization" request
    # header field, the authorization server MUST respond with an HTTP 401 (Unauthorized)
    # status code and include the "WWW-Authenticate" response header field".
    www_authenticate = 'Basic realm="otesse"'


@dataclass(frozen=True)
class AuthenticatedClient:
    client_id: str
    client_type: ClientType
    allowed_scopes: tuple[str, ...]
    method: AuthMethod


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise BasicAuthFailed("Only HTTP Basic client authentication is supported.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BasicAuthFailed("The Authorization header is malformed.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise BasicAuthFailed("The Authorization header is malformed.")
    # RFC 6749 §2.3.1: "The client identifier is encoded using the
    # "application/x-www-form-urlencoded" encoding algorithm …, and the encoded value is used
    # as the username; the client password is encoded using the same algorithm".
    return unquote_plus(client_id), unquote_plus(secret)


class ClientAuthenticator:
    def __init__(self, registry: registry_pb2_grpc.ClientRegistryAsyncStub, *,
                 cache_seconds: float, changes: ClientChanges) -> None:
        self._registry = registry
        # By client id and the secret's hash (b"" for a public client).
        self._cache: ClientCache[AuthenticatedClient] = ClientCache(
            changes, ttl_seconds=cache_seconds, max_entries=_CACHE_LIMIT)

    async def authenticate(self, *, authorization: str | None, params: Mapping[str, str],
                           allow_public: bool = True) -> AuthenticatedClient:
        body_id = params.get("client_id")
        body_secret = params.get("client_secret")
        if authorization is not None:
            # RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in
            # each request."
            if body_secret is not None:
                raise InvalidRequest("Use one client authentication method, not two.")
            client_id, secret = _basic_credentials(authorization)
            if body_id is not None and body_id != client_id:
                raise InvalidRequest("client_id does not match the Authorization header.")
            return await self._confidential(client_id, secret, "client_secret_basic",
                                            basic=True)
        if body_id is None:
            raise InvalidClient("Client authentication is required.")
        if body_secret is not None:
            return await self._confidential(body_id, body_secret, "client_secret_post",
                                            basic=False)
        if not allow_public:
            raise InvalidClient("This endpoint requires client authentication.")
        return await self._public(body_id)

    async def _confidential(self, client_id: str, secret: str, method: AuthMethod, *,
                            basic: bool) -> AuthenticatedClient:
        failure = BasicAuthFailed if basic else InvalidClient
        if not 0 < len(client_id) <= _MAX_ID_LENGTH or not 0 < len(secret) <= _MAX_SECRET_LENGTH:
            raise failure("Client authentication failed.")
        secret_hash = credentials.sha256(secret)
        remembered = self._cache.get(client_id, secret_hash)
        if remembered is not None:
            cached = remembered[0]
            return AuthenticatedClient(cached.client_id, cached.client_type,
                                       cached.allowed_scopes, method)
        ticket = self._cache.ticket()
        try:
            response = await self._registry.AuthenticateClient(
                pb.AuthenticateClientRequest(client_id=client_id, client_secret=secret),
                timeout=_REGISTRY_TIMEOUT)
        except aio.AioRpcError as exc:
            if exc.code() in _REJECTED:
                raise failure("Client authentication failed.") from None
            raise
        client = AuthenticatedClient(response.client.client_id, "confidential",
                                     tuple(response.client.allowed_scopes), method)
        self._cache.put(client_id, client, ticket=ticket, key=secret_hash)
        return client

    async def _public(self, client_id: str) -> AuthenticatedClient:
        if not 0 < len(client_id) <= _MAX_ID_LENGTH:
            raise InvalidClient("Client authentication failed.")
        remembered = self._cache.get(client_id)
        if remembered is not None:
            return remembered[0]
        ticket = self._cache.ticket()
        try:
            response = await self._registry.GetClient(pb.GetClientRequest(client_id=client_id),
                                                      timeout=_REGISTRY_TIMEOUT)
        except aio.AioRpcError as exc:
            if exc.code() in _REJECTED:
                raise InvalidClient("Client authentication failed.") from None
            raise
        if response.client.client_type != pb.CLIENT_TYPE_PUBLIC:
            # A confidential client must authenticate (RFC 6749 §3.2.1).
            raise InvalidClient("Client authentication failed.")
        client = AuthenticatedClient(response.client.client_id, "public",
                                     tuple(response.client.allowed_scopes), "none")
        self._cache.put(client_id, client, ticket=ticket)
        return client
