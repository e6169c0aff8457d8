"""The migration runner: applied once, recorded, safe twice and from concurrent runners."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.cli.migrate import SCHEMAS, migrate_all
from services.common.migrations import MigrationError, migrate


@pytest_asyncio.fixture
async def scratch(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """A schema name of our own inside this run's database (dropped afterwards)."""
    schema = f"scratch_{secrets.token_hex(4)}"
    yield database_url, schema
    connection = await asyncpg.connect(database_url)
    await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    await connection.close()


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_every_service_schema_is_migrated(pool: asyncpg.Pool) -> None:
    for schema in SCHEMAS[:2]:
        count = await pool.fetchval(f"SELECT count(*) FROM {schema}.schema_migrations")
        assert count >= 1


async def test_migrate_all_twice_applies_nothing_the_second_time(database_url: str) -> None:
    assert await migrate_all(database_url) == []


async def test_applies_in_order_once(scratch: tuple[str, str], tmp_path: Path) -> None:
    url, schema = scratch
    write(tmp_path, "0001_create.sql", f"CREATE TABLE {schema}.t (n int);")
    write(tmp_path, "0002_fill.sql", f"INSERT INTO {schema}.t VALUES (1);")
    connection = await asyncpg.connect(url)
    try:
        assert await migrate(connection, schema=schema, directory=tmp_path) == [
            "0001_create.sql", "0002_fill.sql"]
        assert await migrate(connection, schema=schema, directory=tmp_path) == []
        assert await connection.fetchval(f"SELECT count(*) FROM {schema}.t") == 1
        write(tmp_path, "0003_more.sql", f"INSERT INTO {schema}.t VALUES (2);")
        assert await migrate(connection, schema=schema, directory=tmp_path) == ["0003_more.sql"]
    finally:
        await connection.close()


async def test_two_runners_at_once_apply_each_migration_once(
        scratch: tuple[str, str], tmp_path: Path) -> None:
    url, schema = scratch
    write(tmp_path, "0001_create.sql", f"CREATE TABLE {schema}.t (n int);")
    # Slow enough that the second runner arrives while the first holds the lock.
    write(tmp_path, "0002_slow.sql", f"SELECT pg_sleep(0.3); INSERT INTO {schema}.t VALUES (1);")
    connections = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(
            migrate(connection, schema=schema, directory=tmp_path)
            for connection in connections))
        applied = sorted(name for result in results for name in result)
        assert applied == ["0001_create.sql", "0002_slow.sql"]
        assert await connections[0].fetchval(f"SELECT count(*) FROM {schema}.t") == 1
    finally:
        for connection in connections:
            await connection.close()


async def test_a_failed_migration_is_not_recorded(scratch: tuple[str, str], tmp_path: Path) -> None:
    url, schema = scratch
    write(tmp_path, "0001_ok.sql", f"CREATE TABLE {schema}.t (n int);")
    write(tmp_path, "0002_broken.sql", f"INSERT INTO {schema}.t VALUES ('not a number');")
    connection = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.DataError):
            await migrate(connection, schema=schema, directory=tmp_path)
        recorded = await connection.fetch(f"SELECT version FROM {schema}.schema_migrations")
        assert [row["version"] for row in recorded] == ["0001"]
        write(tmp_path, "0002_broken.sql", f"INSERT INTO {schema}.t VALUES (7);")
        assert await migrate(connection, schema=schema, directory=tmp_path) == ["0002_broken.sql"]
    finally:
        await connection.close()


async def test_an_applied_migration_that_changed_stops_the_run(
        scratch: tuple[str, str], tmp_path: Path) -> None:
    url, schema = scratch
    write(tmp_path, "0001_create.sql", f"CREATE TABLE {schema}.t (n int);")
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection, schema=schema, directory=tmp_path)
        write(tmp_path, "0001_create.sql", f"CREATE TABLE {schema}.t (n bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(connection, schema=schema, directory=tmp_path)
    finally:
        await connection.close()


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"],
                         ids=["fails because the version is short",
                              "fails because of a dash", "fails because of upper case"])
async def test_badly_named_files_are_refused(scratch: tuple[str, str], tmp_path: Path,
                                             name: str) -> None:
    url, schema = scratch
    write(tmp_path, name, "SELECT 1;")
    connection = await asyncpg.connect(url)
    try:
        with pytest.raises(MigrationError, match="NNNN_name.sql"):
            await migrate(connection, schema=schema, directory=tmp_path)
    finally:
        await connection.close()
