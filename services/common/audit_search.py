"""Reading the audit trail (``audit.events``, written by :mod:`services.common.audit`).

Only two readers exist, and this module is all they use: the operator CLI (``otesse-auth
audit``: filters by user, client, type and time, newest first) and the authorize service's app
page (the latest events of one app, for its owner, which the page checks first). No service
decides anything from what is read here.

Each filter has an index (see the migration); token issuance, most of the rows, is left out of
the app page and of the indexes that serve it and searches by type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.common import db
from services.common.audit import EVENT_TYPES, EventType

MAX_LIMIT = 10_000
_COLUMNS = ("event_id, occurred_at, event_type, actor_kind, actor_id, subject_user_id,"
            " client_id, grant_id::text AS grant_id, host(client_ip) AS client_ip, request_id,"
            " details::text AS details")


@dataclass(frozen=True)
class StoredEvent:
    event_id: int
    occurred_at: datetime
    type: str
    actor_kind: str
    actor_id: str
    subject_user_id: str | None
    client_id: str | None
    grant_id: str | None
    client_ip: str | None
    request_id: str | None
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "occurred_at": self.occurred_at.isoformat(),
                "type": self.type, "actor": {"kind": self.actor_kind, "id": self.actor_id},
                "subject_user_id": self.subject_user_id, "client_id": self.client_id,
                "grant_id": self.grant_id, "client_ip": self.client_ip,
                "request_id": self.request_id, "details": self.details}


@dataclass(frozen=True)
class Filters:
    """What ``otesse-auth audit`` asks for; every given filter must hold."""

    user_id: str | None = None
    client_id: str | None = None
    event_type: EventType | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(event_id=row["event_id"], occurred_at=row["occurred_at"],
                       type=row["event_type"], actor_kind=row["actor_kind"],
                       actor_id=row["actor_id"], subject_user_id=row["subject_user_id"],
                       client_id=row["client_id"], grant_id=row["grant_id"],
                       client_ip=row["client_ip"], request_id=row["request_id"],
                       details=json.loads(row["details"]))


class AuditSearch:
    def __init__(self, pool: db.Queries) -> None:
        self._pool = pool

    async def search(self, filters: Filters) -> list[StoredEvent]:
        """Events matching ``filters``, newest first, at most ``filters.limit``."""
        if not 1 <= filters.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        if filters.event_type is not None and filters.event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {filters.event_type!r}")
        clauses: list[str] = []
        values: list[object] = []

        def where(clause: str, value: object) -> None:
            values.append(value)
            clauses.append(clause.replace("$?", f"${len(values)}"))

        if filters.user_id is not None:
            where("subject_user_id = $?", filters.user_id)
        if filters.client_id is not None:
            where("client_id = $?", filters.client_id)
        if filters.event_type is not None:
            where("event_type = $?", filters.event_type)
            if filters.event_type != "token.issued":
                # Said in the query's own words, so the planner can use the partial index
                # that leaves token issuance out (a parameter would hide it).
                clauses.append("event_type <> 'token.issued'")
        if filters.since is not None:
            where("occurred_at >= $?", filters.since)
        if filters.until is not None:
            where("occurred_at < $?", filters.until)
        values.append(filters.limit)
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit.events"
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + f" ORDER BY occurred_at DESC, event_id DESC LIMIT ${len(values)}", *values)
        return [_event(row) for row in rows]

    async def of_client(self, *, client_id: str, limit: int = 25) -> list[StoredEvent]:
        """The latest security events of one client, token issuance left out (an app issues
        tokens all day; its page is for what changed and what went wrong). The caller checks
        that the reader owns the client."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit.events"
            " WHERE client_id = $1 AND event_type <> 'token.issued'"
            " ORDER BY occurred_at DESC, event_id DESC LIMIT $2",
            client_id, limit)
        return [_event(row) for row in rows]
