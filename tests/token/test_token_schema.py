"""Token migration 0005, which drops the refresh tokens' foreign key to their grant (its header
says why: a query of its own in every insert), is safe to run on large live tables: it rewrites
no relation, rebuilds no index and scans no row, and it gives up rather than queue every
refresh behind a long reader. What the key promised is tested in test_store_writes.py and
test_purge.py."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.common.migrations import migrate
from tests.conftest import ADMIN_URL, _database_url

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "token" / "migrations"
NEW = "0005_refresh_tokens_without_foreign_key.sql"


@pytest_asyncio.fixture
async def older_database(tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own, its token schema at the migration before 0005, with grants and
    refresh tokens in it."""
    name = f"otesse_test_token_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _database_url(name)
        older = tmp_path / "older"
        older.mkdir()
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name < NEW:
                shutil.copy(path, older)
        connection = await asyncpg.connect(url)
        try:
            assert NEW not in await migrate(connection, schema="token", directory=older)
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
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _files_and_scans(connection: asyncpg.Connection) -> tuple[dict[str, int], int]:
    """Each token relation's file (a rewrite or an index rebuild gives it a new one), and how
    many times the two tables were scanned whole."""
    files = {row["relname"]: row["relfilenode"] for row in await connection.fetch(
        "SELECT relname, relfilenode FROM pg_class"
        " WHERE relnamespace = 'token'::regnamespace AND relkind IN ('r', 'i')")}
    await connection.execute("SELECT pg_stat_force_next_flush()")
    await connection.execute("SELECT 1")  # the flush happens as the backend goes idle
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    scans = await connection.fetchval(
        "SELECT sum(seq_scan) FROM pg_stat_user_tables"
        " WHERE relid IN ('token.grants'::regclass, 'token.refresh_tokens'::regclass)")
    return files, scans


async def test_migration_0005_rewrites_rebuilds_and_scans_nothing(older_database: str) -> None:
    connection = await asyncpg.connect(older_database)
    try:
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'token.refresh_tokens'::regclass AND contype = 'f'") == 1
        before = await _files_and_scans(connection)
        assert await migrate(connection, schema="token", directory=MIGRATIONS) == [NEW]
        after = await _files_and_scans(connection)
        assert after == before
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_constraint"
            " WHERE conrelid = 'token.refresh_tokens'::regclass AND contype = 'f'") == 0
        assert await connection.fetchval("SELECT count(*) FROM token.refresh_tokens") == 3000
    finally:
        await connection.close()


async def test_migration_0005_gives_up_rather_than_queue_refreshes_behind_a_reader(
        older_database: str) -> None:
    # A long read holds the table: the migration's exclusive lock would wait for it, and every
    # refresh would queue behind the migration. It gives up instead.
    reader = await asyncpg.connect(older_database)
    migrator = await asyncpg.connect(older_database)
    try:
        reading = reader.transaction()
        await reading.start()
        await reader.execute("SELECT count(*) FROM token.refresh_tokens")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await migrate(migrator, schema="token", directory=MIGRATIONS)
        await reading.rollback()
        # Nothing was applied, and the next run (the Job's retry) applies it.
        assert await migrate(migrator, schema="token", directory=MIGRATIONS) == [NEW]
    finally:
        await reader.close()
        await migrator.close()
