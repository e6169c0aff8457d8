"""The user's grants, read and revoked through the token service's gRPC ``TokenService``
(RFC 6749 §1.5 and RFC 7009 §2.1: revoking a grant ends every token descended from it).

The authorize service owns the remembered consent; the token service owns the grants and their
tokens. The "Authorized apps" page lists both and revokes both. A token service that is down
raises (the page says 503), and nothing is cached, so the page recovers by itself. A revocation
carries ``on_behalf`` metadata (the user and their address), which the token service records
in its audit events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from otesse.auth.v1 import token_pb2, token_pb2_grpc

SERVICE_NAME = token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name
_DEADLINE_SECONDS = 3.0
OnBehalf = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Grant:
    """One live authorization of one app by the user."""

    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime | None
    last_used_at: datetime | None


class GrantDirectory(Protocol):
    async def list(self, *, user_id: str) -> list[Grant]: ...

    async def revoke(self, *, user_id: str, client_id: str, on_behalf: OnBehalf) -> int: ...

    async def revoke_client(self, *, client_id: str, on_behalf: OnBehalf) -> int: ...


def _when(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


class TokenServiceGrants:
    """:class:`GrantDirectory` over ``TokenService.ListGrants`` / ``RevokeGrant``."""

    def __init__(self, stub: token_pb2_grpc.TokenServiceAsyncStub) -> None:
        self._stub = stub

    async def list(self, *, user_id: str) -> list[Grant]:
        response = await self._stub.ListGrants(token_pb2.ListGrantsRequest(user_id=user_id),
                                               timeout=_DEADLINE_SECONDS)
        return [Grant(grant_id=g.grant_id, client_id=g.client_id, scopes=tuple(g.scopes),
                      created_at=_when(g.created_at, g.HasField("created_at")),
                      last_used_at=_when(g.last_used_at, g.HasField("last_used_at")))
                for g in response.grants]

    async def revoke(self, *, user_id: str, client_id: str, on_behalf: OnBehalf) -> int:
        """Revokes every grant ``user_id`` gave ``client_id``; how many were live."""
        # Both fields, always: an empty user id would widen this to every user of the app.
        if not user_id or not client_id:
            raise ValueError("user_id and client_id are both required")
        response = await self._stub.RevokeGrant(
            token_pb2.RevokeGrantRequest(user_id=user_id, client_id=client_id),
            timeout=_DEADLINE_SECONDS, metadata=on_behalf)
        return response.revoked_grants

    async def revoke_client(self, *, client_id: str, on_behalf: OnBehalf) -> int:
        """Revokes every grant of ``client_id``, whoever gave it (the app is being deleted)."""
        if not client_id:
            raise ValueError("client_id is required")
        response = await self._stub.RevokeGrant(
            token_pb2.RevokeGrantRequest(client_id=client_id), timeout=_DEADLINE_SECONDS,
            metadata=on_behalf)
        return response.revoked_grants
