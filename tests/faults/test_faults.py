"""Store and service faults under a steady mixed load: the stack keeps working and loses nothing.

One fault at a time, with recovery in between, on the suite's own PostgreSQL and Redis
(:mod:`tests.faults.conftest`): Redis restarted with every key lost, Redis paused (SIGSTOP) 5 s,
PostgreSQL restarted (fast shutdown, then start), PostgreSQL paused (the postmaster and every
backend) 5 s, the registry killed (SIGKILL) and started again 5 s later, and the network to
PostgreSQL cut (the proxy drops every connection and refuses new ones) for 5 s.

For each fault, :data:`FAULTS` says which steps of the load need the broken part. While it is
down, those may answer ``503`` with ``Retry-After`` and an RFC error body (or a clear page), or
``UNAVAILABLE`` over gRPC; every other step must keep succeeding. No request may reach its
deadline (:data:`tests.faults.load.DEADLINE_SECONDS`). Within :data:`RECOVERY_SECONDS` of the
part's return every step succeeds again and every service is ready, with no service restarted
(but the registry this fault kills). Then the invariants:

* every refresh token answered 200 still refreshes (rotated only by its own holder);
* no revoked token or grant validates anywhere: gRPC ``ValidateToken``, the bookings API,
  HTTP introspection; no revoked refresh token refreshes;
* no code was answered with tokens twice;
* no 5xx but 503, on the client side and in every service's log (no error record, no
  traceback).

Each fault's outage and recovery times are printed at the end of the run (and in the README).
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from tests.faults.conftest import TIMINGS, World
from tests.faults.load import (
    DEADLINE_SECONDS,
    Answer,
    Chain,
    LoadClient,
    Record,
    Revoked,
    http_outcome,
)
from tests.integration.stack import SERVICES

# Every step must succeed again this soon after the broken part is back.
RECOVERY_SECONDS = 5.0
# Load before the fault, and after the part's return (past the recovery bound).
BASELINE_SECONDS = 2.0
AFTER_SECONDS = RECOVERY_SECONDS + 1.0
# Pauses and the network cut last this long; a restarted store stays down this long.
HOLD_SECONDS = 5.0
RESTART_DOWN_SECONDS = 2.0
# Revoked tokens of earlier faults checked again after each fault.
EARLIER_REVOKED_SAMPLE = 20

# Steps that need Redis: the session and the pending request (authorize, sign-in), the code
# (exchange). Validation does not: the deny-list falls back to Postgres.
REDIS = frozenset({"authorize", "sign_in", "exchange", "double_exchange"})
# Steps that need Postgres: users and consents (authorize, sign-in), grants and refresh
# tokens, revocations, and every client authentication (the registry reads Postgres; the token
# service remembers a success for 5 s). Validation does not: signing keys are in memory, the
# deny-list in Redis.
POSTGRES = frozenset({"authorize", "sign_in", "exchange", "double_exchange", "refresh",
                      "revoke", "introspect"})
# Steps that need the registry: the client behind every authorization and every client
# authentication (each remembered for 5 s by its caller).
REGISTRY = frozenset({"authorize", "sign_in", "exchange", "double_exchange", "refresh",
                      "revoke", "introspect"})
# A code being exchanged when its store failed may be spent without tokens: the app hears 503,
# then invalid_grant when it sends the code again, and sends its user through authorize again.
CODE_SPENT = {"exchange": frozenset({"400 invalid_grant after 503"})}


@dataclass
class Marks:
    """When the part broke and when it was back (``time.monotonic()``)."""

    down: float = 0.0
    back: float = 0.0


Inject = Callable[[World, Marks], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    # Steps that may answer 503 / UNAVAILABLE while the part is down; all others must succeed.
    needs: frozenset[str]
    inject: Inject
    # Other answers the fault may cause (any time after it), by step.
    also: dict[str, frozenset[str]] = field(default_factory=dict)
    # The service the fault kills (and starts again), the only one allowed a new process.
    restarts: str | None = None


async def hold() -> None:
    await asyncio.sleep(HOLD_SECONDS)


async def redis_restart(world: World, marks: Marks) -> None:
    marks.down = time.monotonic()
    world.redis.kill()
    await asyncio.sleep(RESTART_DOWN_SECONDS)
    await asyncio.to_thread(world.redis.start)
    marks.back = time.monotonic()


async def redis_pause(world: World, marks: Marks) -> None:
    marks.down = time.monotonic()
    world.redis.pause()
    await hold()
    world.redis.resume()
    marks.back = time.monotonic()


async def postgres_restart(world: World, marks: Marks) -> None:
    marks.down = time.monotonic()
    await asyncio.to_thread(world.postgres.stop)
    await asyncio.sleep(RESTART_DOWN_SECONDS)
    await asyncio.to_thread(world.postgres.start)
    marks.back = time.monotonic()


async def postgres_pause(world: World, marks: Marks) -> None:
    marks.down = time.monotonic()
    world.postgres.pause()
    await hold()
    world.postgres.resume()
    marks.back = time.monotonic()


async def registry_kill(world: World, marks: Marks) -> None:
    processes = world.processes
    marks.down = time.monotonic()
    assert processes.kill("registry", signal.SIGKILL) == -signal.SIGKILL
    # Down past its callers' 5-second memory of each client, as when its restart is delayed.
    await hold()
    processes.start("registry")
    await asyncio.to_thread(processes.wait_ready, "registry")
    marks.back = time.monotonic()


async def postgres_cut(world: World, marks: Marks) -> None:
    marks.down = time.monotonic()
    await asyncio.to_thread(world.network.cut)
    await hold()
    await asyncio.to_thread(world.network.restore)
    marks.back = time.monotonic()


FAULTS = [
    Fault("redis-restart", REDIS, redis_restart, also={
        # Every session is gone: each person signs in again (consents live in Postgres).
        "authorize": frozenset({"login"}),
        # And every code not yet exchanged.
        "exchange": frozenset({"400 invalid_grant", "400 invalid_grant after 503"})}),
    Fault("redis-pause", REDIS, redis_pause, also=CODE_SPENT),
    Fault("postgres-restart", POSTGRES, postgres_restart, also=CODE_SPENT),
    Fault("postgres-pause", POSTGRES, postgres_pause, also=CODE_SPENT),
    Fault("registry-kill", REGISTRY, registry_kill, restarts="registry"),
    Fault("postgres-cut", POSTGRES, postgres_cut, also=CODE_SPENT),
]


def allowed(fault: Fault, marks: Marks, answer: Answer) -> set[str]:
    outcomes = {"ok"}
    if answer.ended >= marks.down:
        outcomes |= fault.also.get(answer.step, frozenset())
        if answer.step in fault.needs and answer.started <= marks.back + RECOVERY_SECONDS:
            outcomes |= {"503", "UNAVAILABLE"}
    return outcomes


def describe(answer: Answer, marks: Marks) -> str:
    return (f"{answer.step}: {answer.outcome} (sent {answer.started - marks.down:+.2f} s from "
            f"the fault, took {answer.ended - answer.started:.2f} s) {answer.note}").rstrip()


def summary(problems: list[str], answers: list[Answer], limit: int = 25) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n  {shown}{more}\nanswers:\n{breakdown(answers)}"


def breakdown(answers: list[Answer]) -> str:
    """Outcomes by step, for the report."""
    counts = collections.Counter((answer.step, answer.outcome) for answer in answers)
    lines = []
    for step in sorted({step for step, _ in counts}):
        outcomes = ", ".join(f"{outcome} {count}" for (name, outcome), count
                             in sorted(counts.items()) if name == step)
        lines.append(f"  {step}: {outcomes}")
    return "\n".join(lines)


async def seconds_until_ready(world: World) -> float:
    """From now until every service's /readyz answers 200 with every check ok (polled)."""
    started = time.monotonic()
    urls = [world.processes.ready_url(name) for name in SERVICES]
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                answers = await asyncio.gather(*(http.get(url) for url in urls))
                if all(answer.status_code == 200 and answer.json()["status"] == "ready"
                       for answer in answers):
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            assert time.monotonic() - started < RECOVERY_SECONDS * 4, "never ready again"
            await asyncio.sleep(0.05)


def log_sizes(world: World) -> dict[str, int]:
    return {name: (world.stack.logs / f"{name}.log").stat().st_size for name in SERVICES}


def log_problems(world: World, since: dict[str, int]) -> list[str]:
    """Error records and tracebacks written by any service since ``since``."""
    problems = []
    for name in SERVICES:
        with (world.stack.logs / f"{name}.log").open("rb") as log:
            log.seek(since[name])
            lines = log.read().decode(errors="replace").splitlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {}
            level = entry.get("level") if isinstance(entry, dict) else None
            if level in ("error", "critical") or "Traceback" in line:
                problems.append(f"[{name}] {line[:300]}")
    return problems


def client_of(world: World, app_client_id: str) -> LoadClient:
    return next(client for client in world.load.clients if client.app.client_id == app_client_id)


async def refreshes(world: World, chain: Chain) -> bool:
    return await client_of(world, chain.app.client_id).refresh(chain)


async def stays_revoked(world: World, revoked: Revoked) -> list[str]:
    """Every place a revoked token could be accepted refuses it."""
    client = client_of(world, revoked.app.client_id)
    problems = []
    await client.validate("revoked_validate", revoked.access_token)
    await client.call_api(revoked.access_token, step="revoked_bookings")
    tokens = [revoked.access_token]
    if revoked.refresh_token is not None:
        tokens.append(revoked.refresh_token)
        refused = await client.browser.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": revoked.refresh_token},
            auth=(revoked.app.client_id, revoked.app.client_secret))
        if http_outcome(refused, api=True) != "400 invalid_grant":
            problems.append(f"a revoked refresh token refreshed: {refused.status_code}")
    for token in tokens:
        introspected = await client.browser.post(
            "/oauth/introspect", data={"token": token},
            auth=(revoked.app.client_id, revoked.app.client_secret))
        if introspected.status_code != 200 or introspected.json().get("active") is not False:
            problems.append(f"introspection of a revoked token: {introspected.status_code} "
                            f"{introspected.text[:80]}")
    return problems


async def invariants(world: World, record: Record, revoked_before: int) -> list[str]:
    problems: list[str] = []
    first = len(record.answers)
    # The grants retired since the last check, and those still in use.
    chains, record.chains = record.chains, []
    chains += [chain for client in world.load.clients for chain in client.chains]
    limit = asyncio.Semaphore(len(world.load.clients))

    async def check_chain(chain: Chain) -> None:
        async with limit:
            if not await refreshes(world, chain):
                problems.append("a refresh token answered 200 no longer refreshes")

    async def check_revoked(revoked: Revoked) -> None:
        async with limit:
            problems.extend(await stays_revoked(world, revoked))

    earlier = record.revoked[:revoked_before][-EARLIER_REVOKED_SAMPLE:]
    await asyncio.gather(*(check_chain(chain) for chain in chains),
                         *(check_revoked(revoked)
                           for revoked in [*earlier, *record.revoked[revoked_before:]]))
    problems.extend(f"after the fault, {a.step}: {a.outcome} {a.note}".rstrip()
                    for a in record.answers[first:] if a.outcome != "ok")
    twice = [code for code, count in record.exchanged.items() if count > 1]
    if twice:
        problems.append(f"{len(twice)} code(s) answered with tokens twice")
    return problems


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
async def test_fault_under_load(world: World, fault: Fault) -> None:
    record = world.load.record
    first = len(record.answers)
    revoked_before = len(record.revoked)
    logs = log_sizes(world)
    processes = {name: world.processes.running[name] for name in SERVICES
                 if name != fault.restarts}
    marks = Marks()

    world.load.start()
    try:
        await asyncio.sleep(BASELINE_SECONDS)
        await fault.inject(world, marks)
        ready_after = await seconds_until_ready(world)
        await asyncio.sleep(max(0.0, marks.back + AFTER_SECONDS - time.monotonic()))
    finally:
        await world.load.stop()

    answers = record.answers[first:]
    problems = [describe(answer, marks) for answer in answers
                if answer.outcome not in allowed(fault, marks, answer)]
    problems += [f"{name} was restarted or died ({process.returncode})"
                 for name, process in processes.items() if process.poll() is not None]
    if ready_after > RECOVERY_SECONDS:
        problems.append(f"services ready again only {ready_after:.1f} s after the part's return")
    problems += await invariants(world, record, revoked_before)
    problems += log_problems(world, logs)

    refused = [a for a in answers if a.outcome in ("503", "UNAVAILABLE")]
    # In flight from the fault until the part's return, or the last refusal if later.
    horizon = max([marks.back, *(a.started for a in refused)])
    touched = [a for a in answers if a.ended >= marks.down and a.started <= horizon]
    slowest = max((a.ended - a.started for a in refused), default=0.0)
    last = max((a.ended - marks.back for a in refused), default=0.0)
    TIMINGS.append(
        f"{fault.name:<17} part down {marks.back - marks.down:4.1f} s | "
        f"{len(refused):3d} of {len(touched):4d} requests in flight refused (503/UNAVAILABLE), "
        f"slowest {slowest:.2f} s | last refusal {max(0.0, last):.2f} s after its return | "
        f"all ready {ready_after:.2f} s after its return | {len(answers)} requests in "
        f"{answers[-1].ended - answers[0].started if answers else 0:.0f} s "
        f"(deadline {DEADLINE_SECONDS:.0f} s)")
    assert not problems, f"{fault.name}: {summary(problems, answers)}"
