"""The PostgreSQL pool every service opens in its lifespan.

Tuned for hot paths of one statement: statements are prepared once per connection and cached;
a released connection is only rolled back if it was left in a transaction (asyncpg's default
reset runs several statements per release); JIT is off for short queries. The pool starts
empty, so a service whose database is down starts anyway, answers 503 / UNAVAILABLE, and
serves again as soon as the database returns.

Every use of the pool is bounded in time, whatever the database does — refuses connections,
restarts, or stops answering (a stopped server, a network that drops packets):

* waiting for a connection (a free one, or a new one connected) takes at most
  :data:`ACQUIRE_SECONDS` (asyncpg's own query helpers would wait forever);
* a statement takes at most :data:`STATEMENT_SECONDS`; one that times out drops its
  connection (asyncpg would otherwise ask the server to cancel it, on a new connection, and
  hold the request for as long again while a stopped server does not answer).

A connection the server closed (a restart) is noticed and replaced as it leaves the pool, so
no statement is sent on it; one the server has said it ends but not yet closed fails its next
statement without sending it (an outage: the server is going away) and is not used again.
So a store call fails, with an error callers answer as 503 / UNAVAILABLE, within
``ACQUIRE_SECONDS + STATEMENT_SECONDS`` of when it began.

The one patch of asyncpg's pool is here (:class:`BoundedPool`): its ``acquire`` with a default
timeout and a context that drops a connection after a statement timeout.
tests/common/test_db.py fails when the pinned asyncpg stops honouring it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext

from services.common.settings import StoreSettings

ACQUIRE_SECONDS = 1.0
STATEMENT_SECONDS = 1.5


async def _reset(connection: asyncpg.Connection) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class _BoundedAcquire(PoolAcquireContext):
    async def __aexit__(self, *exc: object) -> None:
        connection = self.connection
        failure = exc[1] if len(exc) > 1 else None
        if connection is not None and isinstance(failure, TimeoutError):
            # The statement outlived its timeout: the server may be stopped, and a cancel
            # request would wait as long again. The connection is dropped instead (a statement
            # that still runs on the server ends with it).
            connection.terminate()
        await super().__aexit__(*exc)


class BoundedPool(asyncpg.Pool):
    """asyncpg's pool, waiting at most :data:`ACQUIRE_SECONDS` for a connection by default,
    and dropping a connection whose statement timed out."""

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _BoundedAcquire(self, ACQUIRE_SECONDS if timeout is None else timeout)


async def create_pool(settings: StoreSettings, *, application_name: str,
                      session: Mapping[str, str] | None = None) -> asyncpg.Pool:
    """``session``: more settings of every connection's session (a value SQL must read, such
    as a trigger's, is passed this way, never formatted into a statement)."""
    options: dict[str, Any] = {
        "timeout": ACQUIRE_SECONDS,  # connecting
        "command_timeout": STATEMENT_SECONDS,
        "statement_cache_size": 256,
        "server_settings": {**(session or {}), "application_name": application_name,
                            "jit": "off"},
    }
    # asyncpg.create_pool, with this pool class.
    pool = BoundedPool(
        settings.database_url.value, min_size=0, max_size=settings.db_pool_max,
        max_queries=50_000, max_inactive_connection_lifetime=300.0, setup=None, init=None,
        reset=_reset, loop=None, connection_class=asyncpg.Connection,
        record_class=asyncpg.Record, **options)
    await pool
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """Raises when the database does not answer."""
    await pool.fetchval("SELECT 1", timeout=2.0)
