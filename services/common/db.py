"""The PostgreSQL pool every service opens in its lifespan.

Tuned for hot paths of one statement: statements are prepared once per connection and cached;
a released connection is only rolled back if it was left in a transaction (asyncpg's default
reset runs several statements per release); JIT is off for short queries. The pool starts
empty, so a service whose database is down starts anyway, answers 503 / UNAVAILABLE, and
serves again as soon as the database returns.
"""

from __future__ import annotations

import asyncpg

from services.common.settings import StoreSettings


async def _reset(connection: asyncpg.Connection) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def create_pool(settings: StoreSettings, *, application_name: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url.value,
        min_size=0,
        max_size=settings.db_pool_max,
        max_inactive_connection_lifetime=300.0,
        reset=_reset,
        timeout=3.0,
        command_timeout=10.0,
        statement_cache_size=256,
        server_settings={"application_name": application_name, "jit": "off"},
    )
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """Raises when the database does not answer."""
    await pool.fetchval("SELECT 1", timeout=2.0)
