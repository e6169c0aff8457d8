"""``ClientRegistry`` over gRPC: validation, secrets and the mapping to protobuf.

Errors are raised as :mod:`services.common.rpc_errors`; the server interceptor turns them into
status codes (and a database that is down into ``UNAVAILABLE``). Who may call what is
:data:`ACCESS`, enforced by :class:`services.common.service_auth.AccessPolicyInterceptor`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import audit, credentials
from services.common.rpc_errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.common.service_auth import ANY_CALLER, Policy
from services.registry import logos, validation
from services.registry.store import ClientRecord, ClientStore, ClientType, NewClient

CLIENT_ID_PREFIX = "otesse_ci_"
_TYPES: dict[int, ClientType] = {
    pb.CLIENT_TYPE_UNSPECIFIED: "confidential",
    pb.CLIENT_TYPE_CONFIDENTIAL: "confidential",
    pb.CLIENT_TYPE_PUBLIC: "public",
}
_PB_TYPES = {"confidential": pb.CLIENT_TYPE_CONFIDENTIAL, "public": pb.CLIENT_TYPE_PUBLIC}
_UPDATE_PATHS = frozenset({"name", "description", "redirect_uris", "allowed_scopes", "logo"})
# Compared against when the client is unknown, so that answer takes as long as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"otesse-registry-unknown-client").digest()
_CLIENT_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_SERVICE = pb.DESCRIPTOR.services_by_name["ClientRegistry"].full_name
# Reading a client and checking a secret serve every service that meets clients (the token and
# authorize services); changing a client is for the settings pages (authorize) and the
# operator CLI only.
_ADMINISTRATORS = frozenset({"authorize", "cli"})
ACCESS: Policy = {
    f"/{_SERVICE}/GetClient": ANY_CALLER,
    f"/{_SERVICE}/AuthenticateClient": ANY_CALLER,
    f"/{_SERVICE}/ListClients": ANY_CALLER,
    f"/{_SERVICE}/RegisterClient": _ADMINISTRATORS,
    f"/{_SERVICE}/UpdateClient": _ADMINISTRATORS,
    f"/{_SERVICE}/RotateClientSecret": _ADMINISTRATORS,
    f"/{_SERVICE}/DeleteClient": _ADMINISTRATORS,
}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_proto(record: ClientRecord) -> pb.Client:
    client = pb.Client(
        client_id=record.client_id,
        name=record.name,
        description=record.description,
        redirect_uris=record.redirect_uris,
        allowed_scopes=record.allowed_scopes,
        client_type=_PB_TYPES[record.client_type],
        owner_user_id=record.owner_user_id,
        logo_sha256=record.logo_sha256 or "",
        logo_content_type=record.logo_content_type or "",
        created_at=_timestamp(record.created_at),
        updated_at=_timestamp(record.updated_at),
        secret_issued_at=_timestamp(record.secret_issued_at),
    )
    if record.logo is not None and record.logo_content_type:
        client.logo.CopyFrom(pb.Logo(data=record.logo, content_type=record.logo_content_type))
    return client


def _client_id(value: str) -> str:
    # Ids are "otesse_ci_" + base64url; anything else (a NUL byte included, which Postgres
    # cannot even compare) is refused before it reaches the store.
    if not _CLIENT_ID_SHAPE.fullmatch(value):
        raise InvalidArgument("client_id", "is required (letters, digits, '-' and '_')")
    return value


def _owner_filter(value: str) -> str | None:
    return validation.owner_user_id(value) if value else None


def _logo_fields(logo: pb.Logo | None) -> dict[str, object]:
    if logo is None or not logo.data:
        return {"logo": None, "logo_content_type": None, "logo_sha256": None}
    content_type = logos.check(logo.data)
    return {"logo": logo.data, "logo_content_type": content_type,
            "logo_sha256": hashlib.sha256(logo.data).hexdigest()}


class ClientRegistryServicer(registry_pb2_grpc.ClientRegistryServicer):
    def __init__(self, store: ClientStore, *, default_overlap_seconds: int) -> None:
        self._store = store
        self._default_overlap = default_overlap_seconds

    async def RegisterClient(self, request: pb.RegisterClientRequest,
                             context: aio.ServicerContext[Any, Any]) -> pb.RegisterClientResponse:
        client_type = _TYPES.get(request.client_type)
        if client_type is None:
            raise InvalidArgument("client_type", "must be CONFIDENTIAL or PUBLIC")
        logo = _logo_fields(request.logo if request.HasField("logo") else None)
        secret = credentials.new_credential(credentials.CLIENT_SECRET_PREFIX) \
            if client_type == "confidential" else ""
        actor, origin = audit.from_grpc(context)
        record = await self._store.create(actor=actor, origin=origin, client=NewClient(
            client_id=CLIENT_ID_PREFIX + credentials.random_urlsafe(16),
            name=validation.name(request.name),
            description=validation.description(request.description),
            redirect_uris=validation.redirect_uris(request.redirect_uris),
            allowed_scopes=validation.allowed_scopes(request.allowed_scopes),
            client_type=client_type,
            owner_user_id=validation.owner_user_id(request.owner_user_id),
            logo=logo["logo"],  # type: ignore[arg-type]
            logo_content_type=logo["logo_content_type"],  # type: ignore[arg-type]
            logo_sha256=logo["logo_sha256"],  # type: ignore[arg-type]
            secret_hash=credentials.sha256(secret) if secret else None,
        ))
        return pb.RegisterClientResponse(client=to_proto(record), client_secret=secret)

    async def GetClient(self, request: pb.GetClientRequest,
                        context: aio.ServicerContext[Any, Any]) -> pb.GetClientResponse:
        record = await self._store.get(client_id=_client_id(request.client_id),
                                       owner_user_id=_owner_filter(request.owner_user_id),
                                       include_logo=request.include_logo)
        if record is None:
            raise NotFound("client not found")
        return pb.GetClientResponse(client=to_proto(record))

    async def AuthenticateClient(
        self, request: pb.AuthenticateClientRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.AuthenticateClientResponse:
        client_id = _client_id(request.client_id)
        presented = credentials.sha256(request.client_secret)
        hashes = await self._store.secret_hashes(client_id=client_id)
        now = datetime.now(UTC)
        current = hashes.current if hashes and hashes.current else _DUMMY_HASH
        # Every secret comparison is constant-time; both candidates are always compared.
        matches_current = hmac.compare_digest(presented, current)
        previous_valid = bool(hashes and hashes.previous and hashes.previous_expires_at
                              and hashes.previous_expires_at > now)
        previous = hashes.previous if hashes and hashes.previous else _DUMMY_HASH
        matches_previous = hmac.compare_digest(presented, previous) and previous_valid
        if hashes is None or hashes.current is None or not (matches_current or matches_previous):
            raise Unauthenticated("client authentication failed")
        record = await self._store.get(client_id=client_id)
        if record is None:  # deleted between the two reads
            raise Unauthenticated("client authentication failed")
        return pb.AuthenticateClientResponse(client=to_proto(record))

    async def ListClients(self, request: pb.ListClientsRequest,
                          context: aio.ServicerContext[Any, Any]) -> pb.ListClientsResponse:
        owner = validation.owner_user_id(request.owner_user_id)
        records = await self._store.list_by_owner(owner_user_id=owner)
        return pb.ListClientsResponse(clients=[to_proto(record) for record in records])

    async def UpdateClient(self, request: pb.UpdateClientRequest,
                           context: aio.ServicerContext[Any, Any]) -> pb.UpdateClientResponse:
        client_id = _client_id(request.client_id)
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask", "name at least one field to change")
        unknown = [path for path in paths if path not in _UPDATE_PATHS]
        if unknown:
            raise InvalidArgument("update_mask", f"cannot update {unknown[0]!r}; updatable: "
                                  + ", ".join(sorted(_UPDATE_PATHS)))
        changes: dict[str, object] = {}
        if "name" in paths:
            changes["name"] = validation.name(request.name)
        if "description" in paths:
            changes["description"] = validation.description(request.description)
        if "redirect_uris" in paths:
            changes["redirect_uris"] = validation.redirect_uris(request.redirect_uris)
        if "allowed_scopes" in paths:
            changes["allowed_scopes"] = validation.allowed_scopes(request.allowed_scopes)
        if "logo" in paths:
            changes.update(_logo_fields(request.logo if request.HasField("logo") else None))
        actor, origin = audit.from_grpc(context)
        record = await self._store.update(client_id=client_id,
                                          owner_user_id=_owner_filter(request.owner_user_id),
                                          changes=changes, actor=actor, origin=origin)
        if record is None:
            raise NotFound("client not found")
        return pb.UpdateClientResponse(client=to_proto(record))

    async def RotateClientSecret(
        self, request: pb.RotateClientSecretRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RotateClientSecretResponse:
        client_id = _client_id(request.client_id)
        owner = _owner_filter(request.owner_user_id)
        overlap = (request.overlap_seconds if request.HasField("overlap_seconds")
                   else self._default_overlap)
        if overlap < 0 or overlap > 7 * 24 * 3600:
            raise InvalidArgument("overlap_seconds", "must be between 0 and 604800")
        secret = credentials.new_credential(credentials.CLIENT_SECRET_PREFIX)
        actor, origin = audit.from_grpc(context)
        rotated = await self._store.rotate_secret(client_id=client_id, owner_user_id=owner,
                                                  new_hash=credentials.sha256(secret),
                                                  overlap_seconds=overlap, actor=actor,
                                                  origin=origin)
        if rotated is None:
            existing = await self._store.get(client_id=client_id, owner_user_id=owner)
            if existing is None:
                raise NotFound("client not found")
            raise FailedPrecondition("public clients have no secret to rotate")
        record, previous_expires_at = rotated
        return pb.RotateClientSecretResponse(
            client=to_proto(record), client_secret=secret,
            previous_secret_expires_at=_timestamp(previous_expires_at))

    async def DeleteClient(self, request: pb.DeleteClientRequest,
                           context: aio.ServicerContext[Any, Any]) -> pb.DeleteClientResponse:
        actor, origin = audit.from_grpc(context)
        deleted = await self._store.delete(client_id=_client_id(request.client_id),
                                           owner_user_id=_owner_filter(request.owner_user_id),
                                           actor=actor, origin=origin)
        if not deleted:
            raise NotFound("client not found")
        return pb.DeleteClientResponse()
