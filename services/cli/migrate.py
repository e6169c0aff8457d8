"""``otesse-auth migrate``: applies every service's migrations (safe to run twice, and from
several replicas at once)."""

from __future__ import annotations

import argparse
import asyncio
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from services.common.migrations import migrate
from services.common.settings import Env, StoreSettings

# Schema → the package whose migrations/ folder owns it, in dependency order. ``audit`` is the
# one schema no service owns: every service appends to it (its migration says why that is sound).
SCHEMAS = ("registry", "authorize", "token", "audit")
_FOLDERS = {"audit": ("services.common", "audit_migrations")}


def migration_dir(schema: str) -> Path:
    package, folder = _FOLDERS.get(schema, (f"services.{schema}", "migrations"))
    return Path(str(resources.files(package) / folder))


async def migrate_all(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        applied = []
        for schema in SCHEMAS:
            directory = migration_dir(schema)
            if directory.is_dir():
                names = await migrate(connection, schema=schema, directory=directory)
                applied += [f"{schema}/{name}" for name in names]
        return applied
    finally:
        await connection.close()


def _run(args: argparse.Namespace) -> int:
    settings = StoreSettings.from_env(Env())
    applied = asyncio.run(migrate_all(settings.database_url.value))
    print("\n".join(f"applied {name}" for name in applied) or "nothing to apply")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("migrate", help="apply database migrations")
    parser.set_defaults(handler=_run)
