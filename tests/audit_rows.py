"""Reading ``audit.events`` in tests: the rows a test caused, and a scan of every column of
every row for values that must never be there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

_COLUMNS = ("event_id, occurred_at, event_type, actor_kind, actor_id, subject_user_id,"
            " client_id, grant_id::text AS grant_id, host(client_ip) AS client_ip, request_id,"
            " details")


async def events(pool: asyncpg.Pool, *, where: str, args: Iterable[object] = (),
                 ) -> list[dict[str, Any]]:
    """Rows matching ``where`` (SQL over the table's columns), oldest first, as dicts."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM audit.events WHERE {where}"
                            " ORDER BY event_id", *args)
    return [dict(row) for row in rows]


async def of_grant(pool: asyncpg.Pool, grant_id: str) -> list[dict[str, Any]]:
    return await events(pool, where="grant_id = $1::uuid", args=[grant_id])


async def of_request(pool: asyncpg.Pool, request_id: str) -> list[dict[str, Any]]:
    return await events(pool, where="request_id = $1", args=[request_id])


async def last_event_id(pool: asyncpg.Pool) -> int:
    value: int = await pool.fetchval("SELECT coalesce(max(event_id), 0) FROM audit.events")
    return value


async def rows_holding(pool: asyncpg.Pool, needles: Iterable[str], *, after: int = 0,
                       ) -> list[tuple[str, dict[str, Any]]]:
    """Every (needle, row) where a row written after event ``after`` holds ``needle`` in any
    column, compared as the row's whole text (so a needle split over columns is not found,
    but one inside a JSON value or an address is)."""
    rows = await pool.fetch("SELECT e.*, e::text AS whole FROM audit.events e"
                            " WHERE event_id > $1", after)
    found = []
    for row in rows:
        text = row["whole"]
        for needle in needles:
            if needle and needle in text:
                found.append((needle, dict(row)))
    return found
