"""A developer's own OAuth apps, managed through the registry's gRPC ``ClientRegistry``
(RFC 6749 §2: client registration; RFC 7591 §2 for the metadata a developer provides).

Every call names the signed-in user as ``owner_user_id``, so the registry itself refuses an app
that belongs to someone else with ``NOT_FOUND`` — exactly what it answers for an id that does
not exist. Callers get ``None`` for both and cannot tell them apart (nor can an attacker).
A field the registry refuses (``INVALID_ARGUMENT``, message ``"field: problem"``) becomes
:class:`InvalidField`, so the form can show the problem next to that field. Every change carries
``on_behalf`` metadata (the user and their address,
:func:`services.common.audit.on_behalf`), which the registry records in its audit events.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from grpc import aio

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc

_DEADLINE_SECONDS = 5.0
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
ClientType = Literal["confidential", "public"]
OnBehalf = Sequence[tuple[str, str]]
_TYPES: dict[ClientType, registry_pb2.ClientType.ValueType] = {
    "confidential": registry_pb2.CLIENT_TYPE_CONFIDENTIAL,
    "public": registry_pb2.CLIENT_TYPE_PUBLIC,
}


class InvalidField(Exception):
    """The registry refused one field of the app; ``problem`` is a sentence for the user."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def logo_url(client_id: str, logo_sha256: str) -> str | None:
    """The address of an app's logo (the route ``/apps/{client_id}/logo``, services.authorize.
    logo), versioned by content so browsers may cache it; ``None`` for an app without one.
    The consent screen and the settings pages both link it."""
    if not logo_sha256:
        return None
    return f"/apps/{client_id}/logo?v={logo_sha256[:16]}"


@dataclass(frozen=True)
class AppDetails:
    """What a developer fills in for an app (the logo travels separately)."""

    name: str
    description: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class DeveloperApp:
    client_id: str
    name: str
    description: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    client_type: ClientType
    logo_sha256: str
    created_at: datetime | None
    secret_issued_at: datetime | None

    @property
    def logo_url(self) -> str | None:
        return logo_url(self.client_id, self.logo_sha256)


@dataclass(frozen=True)
class Credentials:
    """A client id and a secret, returned once by the registry (empty for a public app)."""

    client_id: str
    client_secret: str
    # Until when the secret this one replaced keeps working (rotation only).
    previous_expires_at: datetime | None = None


class DeveloperAppStore(Protocol):
    async def list(self, *, owner: str) -> list[DeveloperApp]: ...

    async def get(self, *, owner: str, client_id: str) -> DeveloperApp | None: ...

    async def register(self, *, owner: str, details: AppDetails, client_type: ClientType,
                       logo: bytes | None, on_behalf: OnBehalf) -> Credentials: ...

    async def update(self, *, owner: str, client_id: str, details: AppDetails,
                     logo: bytes | None, remove_logo: bool,
                     on_behalf: OnBehalf) -> DeveloperApp | None: ...

    async def rotate_secret(self, *, owner: str, client_id: str, overlap_seconds: int | None,
                            on_behalf: OnBehalf) -> Credentials | None: ...

    async def delete(self, *, owner: str, client_id: str, on_behalf: OnBehalf) -> bool: ...

    async def names(self, *, client_ids: Sequence[str]) -> dict[str, DeveloperApp]: ...


def _when(message: registry_pb2.Client, field: Literal["created_at", "secret_issued_at"],
          ) -> datetime | None:
    return getattr(message, field).ToDatetime(tzinfo=UTC) if message.HasField(field) else None


def _app(client: registry_pb2.Client) -> DeveloperApp:
    return DeveloperApp(
        client_id=client.client_id, name=client.name, description=client.description,
        redirect_uris=tuple(client.redirect_uris), scopes=tuple(client.allowed_scopes),
        client_type="public" if client.client_type == registry_pb2.CLIENT_TYPE_PUBLIC
        else "confidential",
        logo_sha256=client.logo_sha256, created_at=_when(client, "created_at"),
        secret_issued_at=_when(client, "secret_issued_at"))


def _refused(exc: aio.AioRpcError) -> InvalidField | None:
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    field, _, problem = (exc.details() or "").partition(": ")
    return InvalidField(field, problem or "is not valid")


def well_formed_client_id(client_id: str) -> bool:
    """Client ids are ``otesse_ci_`` + base64url; anything else cannot exist, so is not asked."""
    return _CLIENT_ID.fullmatch(client_id) is not None


class RegistryDeveloperApps:
    """:class:`DeveloperAppStore` over ``ClientRegistry``, always scoped to the owner."""

    def __init__(self, stub: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
        self._stub = stub

    async def list(self, *, owner: str) -> list[DeveloperApp]:
        response = await self._stub.ListClients(
            registry_pb2.ListClientsRequest(owner_user_id=owner), timeout=_DEADLINE_SECONDS)
        return [_app(client) for client in response.clients]

    async def get(self, *, owner: str, client_id: str) -> DeveloperApp | None:
        if not owner or not well_formed_client_id(client_id):
            return None
        try:
            response = await self._stub.GetClient(
                registry_pb2.GetClientRequest(client_id=client_id, owner_user_id=owner),
                timeout=_DEADLINE_SECONDS)
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        return _app(response.client)

    async def names(self, *, client_ids: Sequence[str]) -> dict[str, DeveloperApp]:
        """Apps by id, whoever owns them (for the Authorized apps page); unknown ids left out."""
        wanted = [client_id for client_id in dict.fromkeys(client_ids)
                  if well_formed_client_id(client_id)]
        found = await asyncio.gather(*(self._any(client_id) for client_id in wanted))
        return {app.client_id: app for app in found if app is not None}

    async def _any(self, client_id: str) -> DeveloperApp | None:
        try:
            response = await self._stub.GetClient(
                registry_pb2.GetClientRequest(client_id=client_id), timeout=_DEADLINE_SECONDS)
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        return _app(response.client)

    async def register(self, *, owner: str, details: AppDetails, client_type: ClientType,
                       logo: bytes | None, on_behalf: OnBehalf) -> Credentials:
        if not owner:
            raise ValueError("owner is required")
        try:
            response = await self._stub.RegisterClient(registry_pb2.RegisterClientRequest(
                name=details.name, description=details.description,
                redirect_uris=list(details.redirect_uris), allowed_scopes=list(details.scopes),
                client_type=_TYPES[client_type], owner_user_id=owner,
                logo=registry_pb2.Logo(data=logo) if logo is not None else None),
                timeout=_DEADLINE_SECONDS, metadata=on_behalf)
        except aio.AioRpcError as exc:
            raise _refused(exc) or exc from None
        return Credentials(response.client.client_id, response.client_secret)

    async def update(self, *, owner: str, client_id: str, details: AppDetails,
                     logo: bytes | None, remove_logo: bool,
                     on_behalf: OnBehalf) -> DeveloperApp | None:
        if not owner or not well_formed_client_id(client_id):
            return None
        paths = ["name", "description", "redirect_uris", "allowed_scopes"]
        if logo is not None or remove_logo:
            paths.append("logo")
        try:
            response = await self._stub.UpdateClient(registry_pb2.UpdateClientRequest(
                client_id=client_id, owner_user_id=owner, name=details.name,
                description=details.description, redirect_uris=list(details.redirect_uris),
                allowed_scopes=list(details.scopes),
                logo=registry_pb2.Logo(data=logo) if logo is not None else None,
                update_mask=FieldMask(paths=paths)), timeout=_DEADLINE_SECONDS,
                metadata=on_behalf)
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _refused(exc) or exc from None
        return _app(response.client)

    async def rotate_secret(self, *, owner: str, client_id: str, overlap_seconds: int | None,
                            on_behalf: OnBehalf) -> Credentials | None:
        """A new secret; the old one works ``overlap_seconds`` more (``None``: the registry's
        default, ``0``: stops at once). ``None`` when there is no such app of ``owner``."""
        if not owner or not well_formed_client_id(client_id):
            return None
        request = registry_pb2.RotateClientSecretRequest(client_id=client_id,
                                                         owner_user_id=owner)
        if overlap_seconds is not None:
            request.overlap_seconds = overlap_seconds
        try:
            response = await self._stub.RotateClientSecret(request, timeout=_DEADLINE_SECONDS,
                                                           metadata=on_behalf)
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return None
            raise _refused(exc) or exc from None
        expires = (response.previous_secret_expires_at.ToDatetime(tzinfo=UTC)
                   if response.HasField("previous_secret_expires_at") else None)
        return Credentials(client_id, response.client_secret, expires)

    async def delete(self, *, owner: str, client_id: str, on_behalf: OnBehalf) -> bool:
        if not owner or not well_formed_client_id(client_id):
            return False
        try:
            await self._stub.DeleteClient(
                registry_pb2.DeleteClientRequest(client_id=client_id, owner_user_id=owner),
                timeout=_DEADLINE_SECONDS, metadata=on_behalf)
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True
