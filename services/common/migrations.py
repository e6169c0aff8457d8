"""Schema migrations: plain SQL files applied in order, one schema per owning service.

Each service keeps ``NNNN_name.sql`` files in its ``migrations/`` folder. A file is applied
once, in its own transaction, and recorded in ``<schema>.schema_migrations`` with its checksum;
running again applies nothing, and an applied file that was later edited stops the run (fix it
with a new file). A session-level advisory lock per schema makes concurrent runners (several
replicas starting at once, a migration Job) take turns: the second finds everything applied.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("otesse.migrate")

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"^[a-z][a-z0-9_]*$")


class MigrationError(Exception):
    """A migration folder or an applied migration is not what the runner expects."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        migrations.append(Migration(match.group(1), path.name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return migrations


async def migrate(connection: asyncpg.Connection, *, schema: str, directory: Path) -> list[str]:
    """Applies the pending migrations of ``directory`` to ``schema``; returns their names."""
    if not _SCHEMA.match(schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    migrations = load(directory)
    lock_key = int.from_bytes(hashlib.sha256(f"otesse-migrate:{schema}".encode()).digest()[:8],
                              "big", signed=True)
    await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await connection.execute(
            f"CREATE SCHEMA IF NOT EXISTS {schema};"
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " version text PRIMARY KEY,"
            " name text NOT NULL,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await connection.fetch(
            f"SELECT version, name, checksum FROM {schema}.schema_migrations")
        applied = {row["version"]: row for row in rows}
        done = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{schema}/{migration.name} was changed after it was applied; "
                        "add a new migration instead")
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    f"INSERT INTO {schema}.schema_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum)
            log.info("migration applied", extra={"schema": schema, "migration": migration.name})
            done.append(migration.name)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", lock_key)
