"""The audit table's own rules, against the real Postgres, as an attacker who can run SQL in a
service's session would meet them: every row written from any statement, not only through
``services.common.audit``, holds a known event type and actor kind, ids of bounded length and
small details that are a JSON object. And migration 0002, which moved those rules into domains
(its header says why: their cost in every insert), is safe to run on a large live table: it
rewrites no relation, rebuilds no index and scans no row."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.common.migrations import migrate
from tests.migration_checks import check_gives_up_behind_a_reader, database_before, files_and_scans

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "common" / "audit_migrations"
INSERT = ("INSERT INTO audit.events (event_type, actor_kind, actor_id, subject_user_id,"
          " client_id, request_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)")
GOOD = {"event_type": "token.issued", "actor_kind": "client", "actor_id": "app-1",
        "subject_user_id": "user-1", "client_id": "app-1", "request_id": "req-1",
        "details": '{"grant_type": "refresh_token"}'}

REFUSED = [
    ("an event type outside the list", {"event_type": "token.stolen"}),
    ("an actor kind outside the list", {"actor_kind": "root"}),
    ("an empty actor id", {"actor_id": ""}),
    ("an actor id of 129 characters", {"actor_id": "a" * 129}),
    ("a user id of 129 characters", {"subject_user_id": "u" * 129}),
    ("a client id of 129 characters", {"client_id": "c" * 129}),
    ("a request id of 129 characters", {"request_id": "r" * 129}),
    ("details that are a list", {"details": '["otesse_rt_x"]'}),
    ("details that are a string", {"details": '"hello"'}),
    ("details over 2 KB", {"details": '{"reason": "' + "x" * 2100 + '"}'}),
]


def _row(**changes: str | None) -> list[str | None]:
    return list({**GOOD, **changes}.values())


@pytest.mark.parametrize("changes", [case[1] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
async def test_postgres_refuses_a_row_that_breaks_a_rule(pool: asyncpg.Pool,
                                                         changes: dict[str, str]) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(INSERT, *_row(**changes))


async def test_postgres_takes_a_row_within_the_rules(pool: asyncpg.Pool) -> None:
    rid = "schema-" + secrets.token_hex(8)
    await pool.execute(INSERT, *_row(request_id=rid, actor_id="a" * 128, client_id="c" * 128))
    await pool.execute(INSERT, *_row(request_id=rid, subject_user_id=None, client_id=None))
    rows = await pool.fetch("SELECT client_id, subject_user_id, details FROM audit.events"
                            " WHERE request_id = $1 ORDER BY event_id", rid)
    assert [(r["client_id"], r["subject_user_id"]) for r in rows] == [
        ("c" * 128, "user-1"), (None, None)]
    assert all(r["details"] == '{"grant_type": "refresh_token"}' for r in rows)


async def test_the_tables_own_checks_stay_small(pool: asyncpg.Pool) -> None:
    # Postgres reads a table's CHECK constraints back from their text, and plans them, in
    # every statement that writes the table (every exchange and refresh writes here). The
    # rules live in domains, whose constraints are kept parsed; the table's own check only
    # casts to them.
    size = await pool.fetchval("SELECT sum(length(conbin::text)) FROM pg_constraint"
                               " WHERE conrelid = 'audit.events'::regclass AND contype = 'c'")
    assert size < 1000, f"audit.events' CHECK constraints are {size} characters of node text"


@pytest_asyncio.fixture
async def older_database() -> AsyncIterator[str]:
    """A database of its own, its audit schema at migration 0001."""
    async with database_before("audit", MIGRATIONS, "0002") as url:
        yield url


async def test_migration_0002_rewrites_rebuilds_and_scans_nothing(older_database: str) -> None:
    connection = await asyncpg.connect(older_database)
    try:
        await connection.execute(
            "INSERT INTO audit.events (event_type, actor_kind, actor_id, client_id,"
            " subject_user_id, details)"
            " SELECT (ARRAY['token.issued', 'sign_in.failed', 'grant.revoked'])[1 + i % 3],"
            "  'client', 'app-' || i % 7, 'app-' || i % 7, 'user-' || i % 11, '{}'"
            " FROM generate_series(1, 5000) AS i")
        before = await files_and_scans(connection, "audit", ("audit.events",))
        assert await migrate(connection, schema="audit", directory=MIGRATIONS) == [
            "0002_checks_in_domains.sql"]
        after = await files_and_scans(connection, "audit", ("audit.events",))
        assert after == before
        assert await connection.fetchval("SELECT count(*) FROM audit.events") == 5000
        types = {row["column_name"]: row["domain_name"] for row in await connection.fetch(
            "SELECT column_name, domain_name FROM information_schema.columns"
            " WHERE table_schema = 'audit' AND table_name = 'events'")}
        assert types["actor_kind"] == "actor_kind" and types["details"] == "details"
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(INSERT, *_row(event_type="token.stolen"))
    finally:
        await connection.close()


async def test_migration_0002_gives_up_rather_than_queue_writers_behind_a_reader(
        older_database: str) -> None:
    # Every insert (every token issued) would queue behind the migration.
    await check_gives_up_behind_a_reader(older_database, schema="audit", migrations=MIGRATIONS,
                                         table="audit.events",
                                         expected=["0002_checks_in_domains.sql"])
