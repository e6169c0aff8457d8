"""``otesse-auth audit`` and the audit half of ``otesse-auth purge``, as operators run them: a
real process against this run's database. Filters by user, client, type and time, newest
first, as a table or JSON; purge trims by age, as configured."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.audit_rows import events
from tests.cli.test_cli import cli
from tests.token.conftest import KEK


async def seed(pool: asyncpg.Pool, *, client_id: str, user_id: str | None, event_type: str,
               days_ago: float, request_id: str | None = None) -> int:
    """An event as the services write them, ``days_ago`` (only a test writes the past)."""
    event_id: int = await pool.fetchval(
        "INSERT INTO audit.events (occurred_at, event_type, actor_kind, actor_id,"
        " subject_user_id, client_id, client_ip, request_id, details)"
        " VALUES (now() - $1::float8 * interval '1 day', $2, 'client', $3::text, $4, $3::text,"
        " '203.0.113.5', $5, '{\"grant_type\": \"refresh_token\"}') RETURNING event_id",
        days_ago, event_type, client_id, user_id, request_id)
    return event_id


@pytest.fixture
def marker() -> str:
    return secrets.token_hex(5)


async def test_filters_combine_newest_first(env: dict[str, str], pool: asyncpg.Pool,
                                            marker: str) -> None:
    client, other = f"otesse_ci_a{marker}", f"otesse_ci_b{marker}"
    user = f"user-{marker}"
    ids = {
        "issued_today": await seed(pool, client_id=client, user_id=user,
                                   event_type="token.issued", days_ago=0.01),
        "revoked_2d": await seed(pool, client_id=client, user_id=user,
                                 event_type="grant.revoked", days_ago=2),
        "issued_5d": await seed(pool, client_id=client, user_id=None,
                                event_type="token.issued", days_ago=5),
        "other_client": await seed(pool, client_id=other, user_id=user,
                                   event_type="grant.revoked", days_ago=1),
    }

    async def listed(*args: str) -> list[int]:
        out, _ = await cli(env, "audit", *args, "--json")
        return [row["event_id"] for row in json.loads(out)]

    assert await listed("--client", client) == [
        ids["issued_today"], ids["revoked_2d"], ids["issued_5d"]]
    assert await listed("--user", user) == [
        ids["issued_today"], ids["other_client"], ids["revoked_2d"]]
    assert await listed("--user", user, "--type", "grant.revoked") == [
        ids["other_client"], ids["revoked_2d"]]
    assert await listed("--client", client, "--type", "token.issued") == [
        ids["issued_today"], ids["issued_5d"]]
    assert await listed("--client", client, "--since", "3d", "--until", "1d") == [
        ids["revoked_2d"]]
    since = (datetime.now(UTC) - timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    assert await listed("--client", client, "--since", since, "--until", until) == [
        ids["issued_5d"]]
    assert await listed("--client", client, "--limit", "2") == [
        ids["issued_today"], ids["revoked_2d"]]


async def test_json_names_every_field(env: dict[str, str], pool: asyncpg.Pool,
                                      marker: str) -> None:
    client = f"otesse_ci_{marker}"
    event_id = await seed(pool, client_id=client, user_id="user-1", event_type="token.issued",
                          days_ago=0, request_id=f"req-{marker}")
    out, _ = await cli(env, "audit", "--client", client, "--json")
    (row,) = json.loads(out)
    assert row == {
        "event_id": event_id, "occurred_at": row["occurred_at"], "type": "token.issued",
        "actor": {"kind": "client", "id": client}, "subject_user_id": "user-1",
        "client_id": client, "grant_id": None, "client_ip": "203.0.113.5",
        "request_id": f"req-{marker}", "details": {"grant_type": "refresh_token"}}
    assert datetime.fromisoformat(row["occurred_at"]).tzinfo is not None


async def test_the_table_has_a_header_and_one_aligned_line_per_event(
        env: dict[str, str], pool: asyncpg.Pool, marker: str) -> None:
    client = f"otesse_ci_{marker}"
    for days in (1, 0):
        await seed(pool, client_id=client, user_id=None, event_type="grant.revoked",
                   days_ago=days)
    out, _ = await cli(env, "audit", "--client", client)
    header, *lines = out.rstrip("\n").splitlines()
    assert header.split() == ["time", "type", "actor", "user", "client", "grant", "ip",
                              "request_id", "details"]
    assert len(lines) == 2
    assert all(line.index("grant.revoked") == header.index("type") for line in lines)
    assert all(f"client:{client}" in line and "203.0.113.5" in line for line in lines)
    assert lines[0] > lines[1]  # newest first: the later time sorts after as text
    empty, _ = await cli(env, "audit", "--client", f"otesse_ci_none{marker}")
    assert len(empty.splitlines()) == 1 and empty.split() == header.split()


BAD_ARGUMENTS = [
    ("fails because --since is neither a time nor a duration", ["--since", "yesterday"],
     "--since"),
    ("fails because --until has an unknown unit", ["--until", "3w"], "--until"),
    ("fails because --limit is zero", ["--limit", "0"], "--limit"),
    ("fails because --limit is too large", ["--limit", "10001"], "--limit"),
    ("fails because the type is unknown", ["--type", "token.stolen"], "--type"),
]


@pytest.mark.parametrize(("args", "named"), [case[1:] for case in BAD_ARGUMENTS],
                         ids=[case[0] for case in BAD_ARGUMENTS])
async def test_bad_arguments_are_one_usage_error(env: dict[str, str], args: list[str],
                                                 named: str) -> None:
    _, err = await cli(env, "audit", *args, expect=2)
    assert named in err.strip().splitlines()[-1]


async def test_purge_trims_events_past_the_retention(env: dict[str, str], pool: asyncpg.Pool,
                                                     marker: str) -> None:
    client = f"otesse_ci_{marker}"
    gone = [await seed(pool, client_id=client, user_id=None, event_type="token.issued",
                       days_ago=days) for days in (12, 11, 30)]
    kept = [await seed(pool, client_id=client, user_id=None, event_type="token.issued",
                       days_ago=days) for days in (9, 0)]
    out, _ = await cli({**env, "OTESSE_AUDIT_RETENTION_DAYS": "10", "OTESSE_TOKEN_KEK": KEK},
                       "purge", "--batch-size", "2", "--json")
    report: dict[str, Any] = json.loads(out)
    assert report["audit_events"] >= len(gone)
    left = await events(pool, where="client_id = $1", args=[client])
    assert [row["event_id"] for row in left] == kept


@pytest.mark.parametrize("value", ["0", "ten", "-5"],
                         ids=["fails because a retention under a day",
                              "fails because the retention is not a number",
                              "fails because the retention is negative"])
async def test_a_malformed_retention_is_one_line_naming_it(env: dict[str, str],
                                                           value: str) -> None:
    _, err = await cli({**env, "OTESSE_AUDIT_RETENTION_DAYS": value, "OTESSE_TOKEN_KEK": KEK},
                       "purge", expect=2)
    assert len(err.strip().splitlines()) == 1 and "OTESSE_AUDIT_RETENTION_DAYS" in err


@pytest.fixture
def env(test_env: dict[str, str], registry_address: str) -> dict[str, str]:
    return {**test_env, "OTESSE_REGISTRY_ADDR": registry_address}
