"""Keeping the audit trail for ``OTESSE_AUDIT_RETENTION_DAYS`` and no longer: ``otesse-auth
purge`` deletes older events, oldest first, in bounded batches (``LIMIT`` with ``FOR UPDATE SKIP
LOCKED``, one short statement each, like the rest of purge), so it runs beside live traffic.

The table itself refuses to delete an event younger than a day (its migration), so a retention
below that cannot be configured and nothing else can shorten the trail.
"""

from __future__ import annotations

import asyncio

from services.common import db


class AuditPurger:
    def __init__(self, pool: db.Queries, *, retention_days: int, batch_size: int = 1000,
                 ) -> None:
        if retention_days < 1:
            raise ValueError("audit events are kept at least a day")
        self._pool = pool
        self._retention_days = retention_days
        self._batch = batch_size

    async def run(self) -> int:
        """Deletes every event older than the retention; returns how many."""
        # One cutoff for the whole run, so later batches do not chase a moving line.
        cutoff = await self._pool.fetchval(
            "SELECT now() - $1::int * interval '1 day'", self._retention_days)
        total = 0
        while True:
            status = await self._pool.execute(
                "DELETE FROM audit.events WHERE event_id IN ("
                " SELECT event_id FROM audit.events WHERE occurred_at < $2"
                " ORDER BY occurred_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
                self._batch, cutoff)
            done = int(status.rsplit(" ", 1)[-1])
            total += done
            if done < self._batch:
                return total
            await asyncio.sleep(0)
