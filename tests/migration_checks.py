"""What the tests of a metadata-only migration share: a database of its own whose schema stops
before the migration, what would show a rewrite, an index rebuilt or a table scanned, and the
migration giving up behind a long reader rather than queueing every writer behind itself."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from services.common.migrations import migrate
from tests.conftest import ADMIN_URL, _database_url


@asynccontextmanager
async def database_before(schema: str, migrations: Path, version: str) -> AsyncIterator[str]:
    """A new database, ``schema`` migrated with the files of ``migrations`` before ``version``;
    yields its URL and drops it afterwards."""
    name = f"otesse_test_{schema}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _database_url(name)
        with tempfile.TemporaryDirectory(prefix="otesse-older-migrations-") as older:
            for path in sorted(migrations.glob("*.sql")):
                if path.name < version:
                    shutil.copy(path, older)
            connection = await asyncpg.connect(url)
            try:
                applied = await migrate(connection, schema=schema, directory=Path(older))
            finally:
                await connection.close()
        assert applied and all(file < version for file in applied)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def files_and_scans(connection: asyncpg.Connection, schema: str,
                          tables: tuple[str, ...]) -> tuple[dict[str, int], int]:
    """Each relation of ``schema``'s file (a rewrite or an index rebuild gives it a new one),
    and how many times ``tables`` were scanned whole."""
    files = {row["relname"]: row["relfilenode"] for row in await connection.fetch(
        "SELECT relname, relfilenode FROM pg_class"
        " WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'i')", schema)}
    await connection.execute("SELECT pg_stat_force_next_flush()")
    await connection.execute("SELECT 1")  # the flush happens as the backend goes idle
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    scans = await connection.fetchval(
        "SELECT sum(seq_scan) FROM pg_stat_user_tables WHERE relid = ANY($1::regclass[])",
        list(tables))
    return files, scans


async def check_gives_up_behind_a_reader(url: str, *, schema: str, migrations: Path,
                                         table: str, expected: list[str]) -> None:
    """A long read holds ``table``: the migration's exclusive lock would wait for it, and every
    writer would queue behind the migration. It must give up instead, apply nothing, and apply
    ``expected`` on the next run (the migration Job's retry)."""
    reader = await asyncpg.connect(url)
    migrator = await asyncpg.connect(url)
    try:
        reading = reader.transaction()
        await reading.start()
        await reader.execute(f"SELECT count(*) FROM {table}")
        with pytest.raises(asyncpg.LockNotAvailableError):
            await migrate(migrator, schema=schema, directory=migrations)
        await reading.rollback()
        assert await migrate(migrator, schema=schema, directory=migrations) == expected
    finally:
        await reader.close()
        await migrator.close()
