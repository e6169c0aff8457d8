"""Client storage in Postgres (schema ``registry``).

Security promises of this store: secrets exist here only as SHA-256 hashes; a rotated-out
secret is kept (as a hash) only until its overlap ends; every read that returns a client
selects its columns explicitly, so logo bytes are read only when asked for; every change of an
existing client (update, rotation, deletion) announces the client's id on
:data:`services.common.client_changes.CHANNEL` in the same statement, so the announcement is
delivered exactly when the change commits and other services' caches forget the client then;
every change (registration included) writes its audit event (``client.registered``,
``client.updated``, ``client.secret_rotated``, ``client.deleted``: who, from where) in that same
statement, so neither commits without the other. No secret, hash or logo goes into an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import asyncpg

from services.common import audit, db
from services.common.audit import Actor, Origin
from services.common.client_changes import CHANNEL

ClientType = Literal["confidential", "public"]


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    description: str
    redirect_uris: tuple[str, ...]
    allowed_scopes: tuple[str, ...]
    client_type: ClientType
    owner_user_id: str
    logo_content_type: str | None
    logo_sha256: str | None
    created_at: datetime
    updated_at: datetime
    secret_issued_at: datetime | None
    logo: bytes | None = None


@dataclass(frozen=True)
class SecretHashes:
    current: bytes | None
    previous: bytes | None
    previous_expires_at: datetime | None


@dataclass(frozen=True)
class NewClient:
    client_id: str
    name: str
    description: str
    redirect_uris: Sequence[str]
    allowed_scopes: Sequence[str]
    client_type: ClientType
    owner_user_id: str
    logo: bytes | None
    logo_content_type: str | None
    logo_sha256: str | None
    secret_hash: bytes | None


class ClientStore(Protocol):
    async def create(self, *, client: NewClient, actor: Actor, origin: Origin,
                     ) -> ClientRecord: ...

    async def get(self, *, client_id: str, owner_user_id: str | None = None,
                  include_logo: bool = False) -> ClientRecord | None: ...

    async def secret_hashes(self, *, client_id: str) -> SecretHashes | None: ...

    async def list_by_owner(self, *, owner_user_id: str) -> list[ClientRecord]: ...

    async def update(self, *, client_id: str, owner_user_id: str | None,
                     changes: dict[str, object], actor: Actor, origin: Origin,
                     ) -> ClientRecord | None: ...

    async def rotate_secret(self, *, client_id: str, owner_user_id: str | None,
                            new_hash: bytes, overlap_seconds: int, actor: Actor, origin: Origin,
                            ) -> tuple[ClientRecord, datetime | None] | None: ...

    async def delete(self, *, client_id: str, owner_user_id: str | None, actor: Actor,
                     origin: Origin) -> bool: ...


_COLUMNS = (
    "client_id, name, description, redirect_uris, allowed_scopes, client_type, owner_user_id,"
    " logo_content_type, logo_sha256, created_at, updated_at, secret_issued_at"
)
# Columns UpdateClient may change, mapped to themselves: the only names ever put into SQL.
_UPDATABLE = {
    "name": "name",
    "description": "description",
    "redirect_uris": "redirect_uris",
    "allowed_scopes": "allowed_scopes",
    "logo": "logo",
    "logo_content_type": "logo_content_type",
    "logo_sha256": "logo_sha256",
}


def _record(row: asyncpg.Record, *, logo: bytes | None = None) -> ClientRecord:
    return ClientRecord(
        client_id=row["client_id"],
        name=row["name"],
        description=row["description"],
        redirect_uris=tuple(row["redirect_uris"]),
        allowed_scopes=tuple(row["allowed_scopes"]),
        client_type=row["client_type"],
        owner_user_id=row["owner_user_id"],
        logo_content_type=row["logo_content_type"],
        logo_sha256=row["logo_sha256"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret_issued_at=row["secret_issued_at"],
        logo=logo,
    )


class PgClientStore:
    def __init__(self, pool: db.Queries) -> None:
        self._pool = pool

    async def create(self, *, client: NewClient, actor: Actor, origin: Origin,
                     ) -> ClientRecord:
        row = await self._pool.fetchrow(
            "WITH created AS ("
            "INSERT INTO registry.clients (client_id, name, description, redirect_uris,"
            " allowed_scopes, client_type, owner_user_id, logo, logo_content_type, logo_sha256,"
            " secret_hash, secret_issued_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
            " CASE WHEN $11::bytea IS NULL THEN NULL ELSE now() END)"
            f" RETURNING {_COLUMNS}),"
            " audited AS (" + audit.insert_from(
                "client.registered", first=12, rows="created", subject="owner_user_id",
                client="client_id", grant="NULL") + ")"
            " SELECT * FROM created",
            client.client_id, client.name, client.description, list(client.redirect_uris),
            list(client.allowed_scopes), client.client_type, client.owner_user_id, client.logo,
            client.logo_content_type, client.logo_sha256, client.secret_hash,
            *audit.params(actor, origin, {"client_type": client.client_type}),
        )
        assert row is not None
        audit.counted("client.registered")
        return _record(row)

    async def get(self, *, client_id: str, owner_user_id: str | None = None,
                  include_logo: bool = False) -> ClientRecord | None:
        logo_column = ", logo" if include_logo else ""
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS}{logo_column} FROM registry.clients"
            " WHERE client_id = $1 AND ($2::text IS NULL OR owner_user_id = $2)",
            client_id, owner_user_id,
        )
        if row is None:
            return None
        return _record(row, logo=row["logo"] if include_logo else None)

    async def secret_hashes(self, *, client_id: str) -> SecretHashes | None:
        row = await self._pool.fetchrow(
            "SELECT secret_hash, previous_secret_hash, previous_secret_expires_at"
            " FROM registry.clients WHERE client_id = $1",
            client_id,
        )
        if row is None:
            return None
        return SecretHashes(row["secret_hash"], row["previous_secret_hash"],
                            row["previous_secret_expires_at"])

    async def list_by_owner(self, *, owner_user_id: str) -> list[ClientRecord]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM registry.clients WHERE owner_user_id = $1"
            " ORDER BY created_at DESC, client_id",
            owner_user_id,
        )
        return [_record(row) for row in rows]

    async def update(self, *, client_id: str, owner_user_id: str | None,
                     changes: dict[str, object], actor: Actor, origin: Origin,
                     ) -> ClientRecord | None:
        assignments = []
        values: list[object] = [client_id, owner_user_id]
        for key, value in changes.items():
            column = _UPDATABLE[key]
            values.append(value)
            assignments.append(f"{column} = ${len(values)}")
        assignments.append("updated_at = now()")
        values.append(CHANNEL)
        notify = len(values)
        # The names of what changed, never the values (a logo is bytes; its hash is not news).
        fields = sorted({"logo" if key.startswith("logo") else key for key in changes})
        values.extend(audit.params(actor, origin, {"fields": fields}))
        row = await self._pool.fetchrow(
            f"WITH changed AS (UPDATE registry.clients SET {', '.join(assignments)}"
            " WHERE client_id = $1 AND ($2::text IS NULL OR owner_user_id = $2)"
            f" RETURNING {_COLUMNS}),"
            " audited AS (" + audit.insert_from(
                "client.updated", first=notify + 1, rows="changed", subject="owner_user_id",
                client="client_id", grant="NULL") + ")"
            f" SELECT *, pg_notify(${notify}, client_id) FROM changed",
            *values,
        )
        if row is None:
            return None
        audit.counted("client.updated")
        return _record(row)

    async def rotate_secret(self, *, client_id: str, owner_user_id: str | None,
                            new_hash: bytes, overlap_seconds: int, actor: Actor, origin: Origin,
                            ) -> tuple[ClientRecord, datetime | None] | None:
        # One statement: the old current secret becomes the previous one (for the overlap, or
        # not at all when it is 0) and the new hash becomes current.
        row = await self._pool.fetchrow(
            "WITH rotated AS (UPDATE registry.clients SET"
            " previous_secret_hash = CASE WHEN $4::int > 0 THEN secret_hash END,"
            " previous_secret_expires_at ="
            "   CASE WHEN $4::int > 0 THEN now() + make_interval(secs => $4::int) END,"
            " secret_hash = $3, secret_issued_at = now(), updated_at = now()"
            " WHERE client_id = $1 AND ($2::text IS NULL OR owner_user_id = $2)"
            " AND client_type = 'confidential'"
            f" RETURNING {_COLUMNS}, previous_secret_expires_at),"
            " audited AS (" + audit.insert_from(
                "client.secret_rotated", first=6, rows="rotated", subject="owner_user_id",
                client="client_id", grant="NULL") + ")"
            " SELECT *, pg_notify($5, client_id) FROM rotated",
            client_id, owner_user_id, new_hash, overlap_seconds, CHANNEL,
            *audit.params(actor, origin, {"overlap_seconds": overlap_seconds}),
        )
        if row is None:
            return None
        audit.counted("client.secret_rotated")
        return _record(row), row["previous_secret_expires_at"]

    async def delete(self, *, client_id: str, owner_user_id: str | None, actor: Actor,
                     origin: Origin) -> bool:
        deleted = await self._pool.fetch(
            "WITH deleted AS (DELETE FROM registry.clients"
            " WHERE client_id = $1 AND ($2::text IS NULL OR owner_user_id = $2)"
            " RETURNING client_id, owner_user_id),"
            " audited AS (" + audit.insert_from(
                "client.deleted", first=4, rows="deleted", subject="owner_user_id",
                client="client_id", grant="NULL") + ")"
            " SELECT pg_notify($3, client_id) FROM deleted",
            client_id, owner_user_id, CHANNEL, *audit.params(actor, origin),
        )
        audit.counted("client.deleted", len(deleted))
        return len(deleted) == 1
