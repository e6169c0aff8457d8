"""Exchanges and refreshes that arrive together share one statement (services.common.batches)
and give up none of their promises: each writes its own grant, token and audit event with its
own origin, each is refused for its own reason, a replayed code and a token presented twice
still yield at most one result, and a statement that fails for one write is redone one write
at a time so that only that write fails."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.common import db
from services.common.audit import Origin
from services.common.settings import Env, Secret, StoreSettings
from services.common.unavailable import is_unavailable
from services.token.store import (
    AuthorizationRevoked,
    CodeAlreadyExchanged,
    PgGrantStore,
    Rotation,
)
from tests.conftest import free_port

SCOPES = ("bookings:read", "customers:read")
MONTH = 30 * 86400


def batches(kind: str) -> tuple[float, float]:
    """How many batches of ``kind`` ran in this process, and how many writes they held."""
    labels = {"kind": kind}
    return (REGISTRY.get_sample_value("otesse_store_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("otesse_store_batch_size_sum", labels) or 0.0)


def new_grant(client_id: str, number: int, *, scopes: tuple[str, ...] = SCOPES,
              **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "grant_id": str(uuid.uuid4()), "user_id": f"batch-user-{secrets.token_hex(6)}",
        "client_id": client_id, "scopes": scopes, "code_hash": secrets.token_bytes(32),
        "refresh_hash": secrets.token_bytes(32), "refresh_ttl": MONTH,
        "code_issued_at": time.time() - 1,
        "origin": Origin(f"203.0.113.{number}", f"req-batch-{number}")}
    values.update(overrides)
    return values


def rotation(token_hash: bytes, client_id: str, number: int, **overrides: Any,
             ) -> dict[str, Any]:
    values: dict[str, Any] = {
        "token_hash": token_hash, "successor_hash": secrets.token_bytes(32),
        "successor_sealed": secrets.token_bytes(40), "refresh_ttl": MONTH,
        "client_id": client_id, "allowed_scopes": SCOPES, "requested_scopes": None,
        "origin": Origin(f"198.51.100.{number}", f"req-rotate-{number}")}
    values.update(overrides)
    return values


async def settle(*calls: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def version_of(pool: asyncpg.Pool, grant_id: str) -> str:
    return str(await pool.fetchval("SELECT xmin::text FROM token.grants WHERE grant_id = $1::uuid",
                                   grant_id))


@pytest.fixture
def store(pool: asyncpg.Pool) -> PgGrantStore:
    # One statement of each kind at a time: whatever arrives while it runs goes together next.
    return PgGrantStore(pool, access_token_ttl=3600, batches_in_flight=1)


@pytest.fixture
def client_id() -> str:
    return f"batch-app-{secrets.token_hex(4)}"


async def test_exchanges_that_arrive_together_share_one_statement_and_keep_their_own_rows(
        store: PgGrantStore, pool: asyncpg.Pool, client_id: str) -> None:
    scopes = [SCOPES, ("bookings:read",), (), ("customers:read", "bookings:read"), SCOPES, SCOPES]
    grants = [new_grant(client_id, number, scopes=scopes[number]) for number in range(6)]
    count, held = batches("exchange")

    assert await settle(*(store.create_grant(**grant) for grant in grants)) == [None] * 6

    # The first went alone, at once; the five that arrived meanwhile, together.
    assert batches("exchange") == (count + 2, held + 6)
    versions = [await version_of(pool, str(grant["grant_id"])) for grant in grants]
    assert versions[0] != versions[1] and len(set(versions[1:])) == 1
    for grant in grants:
        row = await pool.fetchrow(
            "SELECT g.user_id, g.client_id, g.scopes, g.code_hash, g.expires_at,"
            " r.token_hash, r.expires_at AS token_expires FROM token.grants g"
            " JOIN token.refresh_tokens r ON r.grant_id = g.grant_id"
            " WHERE g.grant_id = $1::uuid", grant["grant_id"])
        assert row is not None
        assert (row["user_id"], row["client_id"], tuple(row["scopes"]), row["code_hash"],
                row["token_hash"]) == (grant["user_id"], client_id, grant["scopes"],
                                       grant["code_hash"], grant["refresh_hash"])
        assert row["expires_at"] == row["token_expires"]
        event = await pool.fetchrow(
            "SELECT actor_kind, actor_id, subject_user_id, client_id, host(client_ip) AS ip,"
            " request_id, details FROM audit.events"
            " WHERE grant_id = $1::uuid AND event_type = 'token.issued'", grant["grant_id"])
        assert event is not None
        origin = grant["origin"]
        assert isinstance(origin, Origin)
        assert dict(event) | {"details": json.loads(event["details"])} == {
            "actor_kind": "client", "actor_id": client_id, "subject_user_id": grant["user_id"],
            "client_id": client_id, "ip": origin.ip, "request_id": origin.request_id,
            "details": {"grant_type": "authorization_code",
                        "scope": " ".join(grant["scopes"])}}


async def test_each_exchange_in_a_batch_is_refused_for_its_own_reason(
        store: PgGrantStore, pool: asyncpg.Pool, client_id: str) -> None:
    revoked_user = f"batch-revoked-{secrets.token_hex(4)}"
    # The user revoked this app after the code was issued: that code is void.
    await pool.execute("INSERT INTO token.authorization_revocations (user_id, client_id,"
                       " revoked_at) VALUES ($1, $2, now())", revoked_user, client_id)
    replayed = secrets.token_bytes(32)
    # The code was replayed before its exchange committed: the replay left a tombstone.
    await store.revoke_replayed_code(code_hash=replayed, presented_by=client_id,
                                     origin=Origin("192.0.2.1", "req-replay"))
    grants = [new_grant(client_id, 0), new_grant(client_id, 1),
              new_grant(client_id, 2, user_id=revoked_user, code_issued_at=time.time() - 60),
              new_grant(client_id, 3, code_hash=replayed), new_grant(client_id, 4)]

    outcomes = await settle(*(store.create_grant(**grant) for grant in grants))

    assert outcomes[0] is None and outcomes[1] is None and outcomes[4] is None
    assert isinstance(outcomes[2], AuthorizationRevoked)
    assert isinstance(outcomes[3], CodeAlreadyExchanged)
    assert await version_of(pool, str(grants[1]["grant_id"])) == await version_of(
        pool, str(grants[4]["grant_id"]))
    for refused in (grants[2], grants[3]):
        assert await pool.fetchval("SELECT count(*) FROM token.grants WHERE grant_id = $1::uuid",
                                   refused["grant_id"]) == 0
        assert await pool.fetchval("SELECT count(*) FROM audit.events WHERE grant_id = $1::uuid",
                                   refused["grant_id"]) == 0
    # The tombstone is still the only row of the replayed code, and still revoked.
    assert await pool.fetchval("SELECT count(*) FROM token.grants WHERE code_hash = $1"
                               " AND revoked_at IS NOT NULL", replayed) == 1


async def test_a_statement_one_write_breaks_is_redone_one_write_at_a_time(
        store: PgGrantStore, pool: asyncpg.Pool, client_id: str) -> None:
    # Two writes naming one grant id (a uuid4 never repeats; a bug might): the batch's statement
    # fails on the primary key, and each write is tried again alone.
    twice = str(uuid.uuid4())
    grants = [new_grant(client_id, 0), new_grant(client_id, 1, grant_id=twice),
              new_grant(client_id, 2), new_grant(client_id, 3, grant_id=twice)]

    outcomes = await settle(*(store.create_grant(**grant) for grant in grants))

    assert outcomes[:3] == [None, None, None]
    assert isinstance(outcomes[3], CodeAlreadyExchanged)
    assert await pool.fetchval("SELECT code_hash FROM token.grants WHERE grant_id = $1::uuid",
                               twice) == grants[1]["code_hash"]
    assert await version_of(pool, str(grants[1]["grant_id"])) != await version_of(
        pool, str(grants[2]["grant_id"]))


async def test_refreshes_that_arrive_together_share_one_statement_and_decide_each_alone(
        store: PgGrantStore, pool: asyncpg.Pool, client_id: str) -> None:
    grants = [new_grant(client_id, number) for number in range(8)]
    for grant in grants:
        await store.create_grant(**grant)
    tokens = [grant["refresh_hash"] for grant in grants]
    assert isinstance(tokens[0], bytes)
    await pool.execute("UPDATE token.grants SET revoked_at = now() WHERE grant_id = $1::uuid",
                       grants[4]["grant_id"])
    twice = [rotation(tokens[5], client_id, 50), rotation(tokens[5], client_id, 51)]
    rotations = [
        rotation(tokens[0], client_id, 0),                                    # blocker, alone
        rotation(tokens[1], client_id, 1),                                    # the whole scope
        rotation(tokens[2], client_id, 2, requested_scopes=["customers:read"]),  # narrowed
        rotation(tokens[3], "another-app", 3),                                # not its token
        rotation(tokens[4], client_id, 4),                                    # grant revoked
        *twice,                                                               # one wins
        rotation(tokens[6], client_id, 6, requested_scopes=["bookings:write"]),  # not granted
        rotation(tokens[7], client_id, 7, allowed_scopes=["bookings:read"]),  # app lost one
    ]
    count, held = batches("refresh")

    outcomes = await settle(*(store.rotate_refresh(**r) for r in rotations))

    assert not any(isinstance(outcome, BaseException) for outcome in outcomes)
    made = [outcome if isinstance(outcome, Rotation) else None for outcome in outcomes]
    expected_scopes = {0: SCOPES, 1: SCOPES, 2: ("customers:read",), 8: ("bookings:read",)}
    assert {i: m.scopes for i, m in enumerate(made) if m is not None and i not in (5, 6)} == (
        expected_scopes)
    # The token presented twice rotated once, to the winner's successor.
    winners = [i for i in (5, 6) if made[i] is not None]
    assert len(winners) == 1
    assert await pool.fetchval("SELECT successor_hash FROM token.refresh_tokens"
                               " WHERE token_hash = $1", tokens[5]) == (
        rotations[winners[0]]["successor_hash"])
    # The blocker alone; the other seven distinct tokens in one statement (the second
    # presentation of the same token after it, alone).
    assert batches("refresh") == (count + 2, held + 9)
    for index in (1, 2, 8):
        successor = await pool.fetchrow(
            "SELECT grant_id::text, predecessor_sealed, xmin::text AS version,"
            " expires_at > now() + interval '29 days' AS long FROM token.refresh_tokens"
            " WHERE token_hash = $1", rotations[index]["successor_hash"])
        assert successor is not None and successor["long"]
        assert successor["predecessor_sealed"] == rotations[index]["successor_sealed"]
        event = await pool.fetchrow(
            "SELECT host(client_ip) AS ip, request_id, details FROM audit.events"
            " WHERE grant_id = $1::uuid AND event_type = 'token.issued'"
            " AND details->>'grant_type' = 'refresh_token'", successor["grant_id"])
        origin = rotations[index]["origin"]
        assert event is not None and isinstance(origin, Origin)
        assert (event["ip"], event["request_id"]) == (origin.ip, origin.request_id)
        assert json.loads(event["details"])["scope"] == " ".join(expected_scopes[index])
    versions = {await pool.fetchval("SELECT xmin::text FROM token.refresh_tokens"
                                    " WHERE token_hash = $1", rotations[index]["successor_hash"])
                for index in (1, 2, 8)}
    assert len(versions) == 1
    # What did nothing left nothing behind.
    for index in (3, 4, 7):
        assert await pool.fetchval("SELECT rotated_at FROM token.refresh_tokens"
                                   " WHERE token_hash = $1", rotations[index]["token_hash"]) is None
        assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                                   " WHERE token_hash = $1",
                                   rotations[index]["successor_hash"]) == 0


async def test_every_write_of_a_batch_learns_the_database_is_down(client_id: str) -> None:
    settings = replace(StoreSettings.from_env(Env({})), database_url=Secret(
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"))
    unreachable = await db.create_pool(settings, application_name="otesse-test-batches")
    try:
        store = PgGrantStore(unreachable, access_token_ttl=3600, batches_in_flight=1)
        outcomes = await settle(*(store.create_grant(**new_grant(client_id, number))
                                  for number in range(4)))
        refreshed = await settle(*(store.rotate_refresh(**rotation(
            secrets.token_bytes(32), client_id, number)) for number in range(4)))
    finally:
        await unreachable.close()

    for outcome in [*outcomes, *refreshed]:
        assert isinstance(outcome, BaseException) and is_unavailable(outcome), outcome


async def test_a_rotation_that_breaks_the_shared_statement_fails_alone(
        store: PgGrantStore, pool: asyncpg.Pool, client_id: str) -> None:
    grants = [new_grant(client_id, number) for number in range(4)]
    for grant in grants:
        await store.create_grant(**grant)
    # Two rotations naming one successor (a bug: successors are random): the shared statement
    # fails on the refresh tokens' primary key, and each rotation is tried again alone.
    successor = secrets.token_bytes(32)
    rotations = [rotation(grants[0]["refresh_hash"], client_id, 0),
                 rotation(grants[1]["refresh_hash"], client_id, 1, successor_hash=successor),
                 rotation(grants[2]["refresh_hash"], client_id, 2),
                 rotation(grants[3]["refresh_hash"], client_id, 3, successor_hash=successor)]

    outcomes = await settle(*(store.rotate_refresh(**r) for r in rotations))

    assert all(isinstance(outcome, Rotation) for outcome in outcomes[:3])
    assert isinstance(outcomes[3], asyncpg.UniqueViolationError)
    assert await pool.fetchval("SELECT rotated_at FROM token.refresh_tokens WHERE token_hash = $1",
                               grants[3]["refresh_hash"]) is None
    assert await pool.fetchval("SELECT grant_id::text FROM token.refresh_tokens"
                               " WHERE token_hash = $1", successor) == grants[1]["grant_id"]
