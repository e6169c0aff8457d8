"""Token migration 0005, which drops the refresh tokens' foreign key to their grant (its header
says why: a query of its own in every insert), is safe to run on large live tables: it rewrites
no relation, rebuilds no index and scans no row, and it gives up rather than queue every
refresh behind a long reader. What the key promised is tested in test_store_writes.py and
test_purge.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio

from services.common.migrations import migrate
from tests.migration_checks import check_gives_up_behind_a_reader, database_before, files_and_scans

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "token" / "migrations"
NEW = "0005_refresh_tokens_without_foreign_key.sql"


@pytest_asyncio.fixture
async def older_database() -> AsyncIterator[str]:
    """A database of its own, its token schema at the migration before 0005, with grants and
    refresh tokens in it."""
    async with database_before("token", MIGRATIONS, NEW) as url:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO token.grants (grant_id, user_id, client_id, scopes, code_hash,"
                " expires_at)"
                " SELECT gen_random_uuid(), 'user-' || i, 'app-' || i % 7, '{bookings:read}',"
                "  sha256(('code-' || i)::bytea), now() + interval '30 days'"
                " FROM generate_series(1, 3000) AS i")
            await connection.execute(
                "INSERT INTO token.refresh_tokens (token_hash, grant_id, expires_at)"
                " SELECT sha256(('refresh-' || grant_id)::bytea), grant_id, expires_at"
                " FROM token.grants")
        finally:
            await connection.close()
        yield url


TABLES = ("token.grants", "token.refresh_tokens")


async def test_migration_0005_rewrites_rebuilds_and_scans_nothing(older_database: str) -> None:
    connection = await asyncpg.connect(older_database)
    try:
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'token.refresh_tokens'::regclass AND contype = 'f'") == 1
        before = await files_and_scans(connection, "token", TABLES)
        assert await migrate(connection, schema="token", directory=MIGRATIONS) == [NEW]
        after = await files_and_scans(connection, "token", TABLES)
        assert after == before
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'token.refresh_tokens'::regclass AND contype = 'f'") == 0
        assert await connection.fetchval("SELECT count(*) FROM token.refresh_tokens") == 3000
    finally:
        await connection.close()


async def test_migration_0005_gives_up_rather_than_queue_refreshes_behind_a_reader(
        older_database: str) -> None:
    # Every exchange and refresh would queue behind the migration.
    await check_gives_up_behind_a_reader(older_database, schema="token", migrations=MIGRATIONS,
                                         table="token.refresh_tokens", expected=[NEW])
