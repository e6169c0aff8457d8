"""Reading the revocation log (``token.revocation_log``, migration 0003): the record the
revocation feed streams to resource servers.

Promises kept by the database (the migration says how): every revocation, whatever path made
it, has one row, written in the revoking transaction; row ids (the subscribers' cursors) are in
commit order, so once a reader has seen id *n*, every row it has not seen has an id above *n*;
a row can be forgotten after its ``relevant_until``, and purge records the highest id it
removed (the *horizon*): a cursor below it may have missed rows.

Each read is one statement, so each sees one snapshot of the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg

from services.common import db
from services.token.revocations import LoggedRevocation, RevocationKind

# Rows per read of the tail: a subscriber far behind catches up in several reads.
TAIL_BATCH = 1000

Start = Literal["tail", "snapshot"]
# The highest id committed (one step down the primary key's index).
_COMMITTED = "coalesce((SELECT max(id) FROM token.revocation_log), 0)"


@dataclass(frozen=True)
class Snapshot:
    # Every revocation still relevant, in commit order.
    revocations: Sequence[LoggedRevocation]
    # The cursor the snapshot is complete up to: the live tail starts after it.
    head: int


def _entry(row: asyncpg.Record) -> LoggedRevocation:
    return LoggedRevocation(cursor=row["id"], kind=cast(RevocationKind, row["kind"]),
                            value=row["value"], relevant_until=row["relevant_until"].timestamp())


class RevocationLog:
    def __init__(self, pool: db.Queries) -> None:
        self._pool = pool

    async def head(self) -> int:
        """The highest cursor committed (or purged) so far."""
        head: int = await self._pool.fetchval(
            "SELECT greatest(purged_through, " + _COMMITTED + ")"
            " FROM token.revocation_log_horizon")
        return head

    async def start(self, cursor: int) -> Start:
        """Where a subscriber at ``cursor`` starts: the tail after it, or a snapshot when it
        has none (0), is below the horizon (rows after it may be purged), or is beyond anything
        this database committed (it came from another database, or a restored one)."""
        if cursor <= 0:
            return "snapshot"
        row = await self._pool.fetchrow(
            "SELECT purged_through, " + _COMMITTED + " AS committed"
            " FROM token.revocation_log_horizon")
        assert row is not None
        if cursor < row["purged_through"] or cursor > max(row["committed"],
                                                            row["purged_through"]):
            return "snapshot"
        return "tail"

    async def snapshot(self) -> Snapshot:
        """Every revocation still relevant, and the head they are complete up to (one
        statement: one view of the log)."""
        rows = await self._pool.fetch(
            "WITH head AS (SELECT greatest(purged_through, " + _COMMITTED + ") AS head"
            "  FROM token.revocation_log_horizon)"
            " SELECT head.head, l.id, l.kind, l.value, l.relevant_until FROM head"
            " LEFT JOIN token.revocation_log l ON l.relevant_until > now() ORDER BY l.id")
        head = rows[0]["head"] if rows else 0
        return Snapshot(revocations=[_entry(row) for row in rows if row["id"] is not None],
                        head=head)

    async def tail(self, after: int, *, limit: int = TAIL_BATCH) -> list[LoggedRevocation]:
        """Up to ``limit`` rows after cursor ``after``, in commit order."""
        rows = await self._pool.fetch(
            "SELECT id, kind, value, relevant_until FROM token.revocation_log WHERE id > $1"
            " ORDER BY id LIMIT $2", after, limit)
        return [_entry(row) for row in rows]
