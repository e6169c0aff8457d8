"""The audit trail's writer and its table, against the real Postgres: what a row may hold (a
fixed vocabulary, never anything shaped like a secret), that the table is append-only (no
update, no truncation, no deletion of anything younger than a day), and retention."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest

from services.common import audit
from services.common.audit import Actor, Event, Origin, PgAuditLog
from services.common.audit_retention import AuditPurger
from services.common.log import request_id_var
from tests.audit_rows import events

REFUSED_DETAILS: list[tuple[str, dict[str, Any], str]] = [
    ("fails because the key is not in the vocabulary", {"password": "x"}, "vocabulary"),
    ("fails because a refresh token is shaped like one", {"reason": "otesse_rt_" + "a" * 43},
     "secret"),
    ("fails because a client secret is shaped like one", {"scope": "otesse_cs_" + "b" * 43},
     "secret"),
    ("fails because an access token is shaped like one",
     {"grant_type": "otesse_at_eyJhbGciOiJFUzI1NiJ9.e30.sig"}, "secret"),
    ("fails because a bearer credential is shaped like one", {"reason": "Bearer abc.def"},
     "secret"),
    ("fails because a secret hides in a list", {"fields": ["name", "otesse_rt_xyz"]},
     "secret"),
    ("fails because the value is too long", {"reason": "x" * 201}, "too long"),
    ("fails because the list is too long", {"fields": ["f"] * 21}, "short list"),
    ("fails because a list holds something else than text", {"fields": [1, 2]},
     "short list"),
]


@pytest.mark.parametrize(("details", "message"), [case[1:] for case in REFUSED_DETAILS],
                         ids=[case[0] for case in REFUSED_DETAILS])
async def test_details_that_could_hold_a_secret_are_refused_before_any_write(
        pool: asyncpg.Pool, details: dict[str, Any], message: str) -> None:
    rid = "audit-" + secrets.token_hex(8)
    with pytest.raises(ValueError, match=message):
        await PgAuditLog(pool).record(Event(type="sign_in.failed", actor=Actor.anonymous(),
                                            origin=Origin(request_id=rid), details=details))
    assert await events(pool, where="request_id = $1", args=[rid]) == []


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audit event type"):
        audit.insert_from("token.stolen", first=1, rows="r", subject="NULL",  # type: ignore[arg-type]
                          client="NULL", grant="NULL")


@pytest.mark.parametrize(("ip", "request_id", "expected"), [
    ("203.0.113.9", "abc", Origin("203.0.113.9", "abc")),
    ("2001:db8::1", "abc", Origin("2001:db8::1", "abc")),
    ("unknown", "abc", Origin(None, "abc")),
    ("", "-", Origin(None, None)),
    (None, "x" * 200, Origin(None, "x" * 128)),
], ids=["an IPv4 address", "an IPv6 address", "fails because a peer without an address is none",
        "no request id is none", "a request id is cut to the column's size"])
def test_an_origin_keeps_only_what_fits(ip: str | None, request_id: str,
                                        expected: Origin) -> None:
    token = request_id_var.set(request_id)
    try:
        assert Origin.of(ip) == expected
    finally:
        request_id_var.reset(token)


async def test_a_recorded_event_has_every_field_and_postgres_time(pool: asyncpg.Pool) -> None:
    rid = "audit-" + secrets.token_hex(8)
    grant_id = "6f1c8a2e-5b0d-4c3f-9a7e-1d2c3b4a5f60"
    before = await pool.fetchval("SELECT now()")
    await PgAuditLog(pool).record(Event(
        type="grant.revoked", actor=Actor.operator(), origin=Origin("192.0.2.1", rid),
        subject_user_id="user-1", client_id="otesse_ci_1", grant_id=grant_id,
        details={"reason": "operator"}))
    (row,) = await events(pool, where="request_id = $1", args=[rid])
    assert (row["event_type"], row["actor_kind"], row["actor_id"], row["subject_user_id"],
            row["client_id"], row["grant_id"], row["client_ip"]) == (
        "grant.revoked", "operator", "operator", "user-1", "otesse_ci_1", grant_id,
        "192.0.2.1")
    assert row["details"] == '{"reason": "operator"}'
    assert row["occurred_at"] >= before


async def recorded(pool: asyncpg.Pool, *, days_ago: float = 0) -> int:
    """An event written ``days_ago`` (straight into the table, as only a test may)."""
    event_id: int = await pool.fetchval(
        "INSERT INTO audit.events (occurred_at, event_type, actor_kind, actor_id)"
        " VALUES (now() - $1::float8 * interval '1 day', 'signing_key.rotated', 'system',"
        " 'system') RETURNING event_id", days_ago)
    return event_id


TAMPERING = [
    ("fails because an event cannot be changed",
     "UPDATE audit.events SET actor_id = 'someone else' WHERE event_id = $1"),
    ("fails because a recent event cannot be deleted",
     "DELETE FROM audit.events WHERE event_id = $1"),
    ("fails because the table cannot be emptied", "TRUNCATE audit.events"),
]


@pytest.mark.parametrize("statement", [case[1] for case in TAMPERING],
                         ids=[case[0] for case in TAMPERING])
async def test_the_trail_is_append_only(pool: asyncpg.Pool, statement: str) -> None:
    event_id = await recorded(pool, days_ago=0.5)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute(statement, *([event_id] if "$1" in statement else []))
    assert len(await events(pool, where="event_id = $1", args=[event_id])) == 1


async def test_purge_trims_by_age_in_batches(pool: asyncpg.Pool) -> None:
    old = [await recorded(pool, days_ago=days) for days in (30, 31, 45, 400)]
    kept = [await recorded(pool, days_ago=days) for days in (0, 2, 29)]
    purged = await AuditPurger(pool, retention_days=30, batch_size=2).run()
    assert purged >= len(old)  # and any other test's event as old (none is)
    remaining = {row["event_id"] for row in await events(
        pool, where="event_id = ANY($1::bigint[])", args=[old + kept])}
    assert remaining == set(kept)
    assert await AuditPurger(pool, retention_days=30, batch_size=2).run() == 0


def test_a_retention_under_a_day_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="at least a day"):
        AuditPurger(pool, retention_days=0)


async def test_a_day_old_event_may_go_but_not_a_younger_one(pool: asyncpg.Pool) -> None:
    older = await recorded(pool, days_ago=1 + 1 / 24)
    younger = await recorded(pool, days_ago=1 - 1 / 24)
    await pool.execute("DELETE FROM audit.events WHERE event_id = $1", older)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("DELETE FROM audit.events WHERE event_id = $1", younger)
