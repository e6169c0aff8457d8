"""The soak's machinery works: a few seconds of the mixed flow against the integration tests'
stack take every sample the soak prints (latency per step, memory and open files per service,
Postgres connections, Redis keys) with no error, its chart is a well-formed SVG, and its
pass/fail rules say what they promise. No speed is asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import replace

import asyncpg
import pytest

from bench import flow
from bench.plot import nice_ticks
from bench.procs import open_fds, rss_kib
from bench.soak import row, svg
from bench.stack import REDIRECT_URI, SCOPE, service_pids
from bench.steady import STEPS, AtRest, Plan, Run, Sample, Target, drive, judge
from tests.conftest import REDIS_URL
from tests.integration.people import new_person, register_app
from tests.integration.stack import SERVICES, Stack

pytest_plugins = ["tests.integration.fixtures"]

# Two clients, two flows a second, one refresh each: the test stack's per-client limit on
# /oauth/token (40 a minute) is far away.
PLAN = Plan(seconds=4.0, every=0.5, rate=2.0, workers=2, refreshes=1, rest=0.5)


async def soak_target(stack: Stack, pool: asyncpg.Pool, database_url: str,
                      redis_prefix: str) -> Target:
    clients = []
    for number in range(2):
        person = await new_person(pool)
        app = await register_app(stack.registry_grpc, redirect_uri=REDIRECT_URI, scopes=SCOPE,
                                 name=f"Otesse Soak {number}")
        clients.append((flow.Person(email=person.email, password=person.password),
                        flow.App(client_id=app.client_id, client_secret=app.client_secret,
                                 redirect_uri=REDIRECT_URI, scope=SCOPE)))
    # The integration stack's services are this test process's own children.
    pids = service_pids(os.getpid())
    assert set(pids) == set(SERVICES)
    return Target(gateway_url=stack.gateway,
                  token_url=f"http://localhost:{stack.env['OTESSE_TOKEN_EDGE_PORT']}",
                  token_grpc=stack.token_grpc,
                  bookings_url=stack.bookings, clients=tuple(clients), pids=pids,
                  database_url=database_url, database_name=database_url.rsplit("/", 1)[1],
                  redis_url=REDIS_URL, redis_prefix=redis_prefix)


async def test_a_short_soak_samples_everything_without_errors(
        stack: Stack, pool: asyncpg.Pool, database_url: str, redis_prefix: str) -> None:
    target = await soak_target(stack, pool, database_url, redis_prefix)
    printed: list[str] = []

    run = await drive(target, PLAN, lambda sample: printed.append(row(sample)))

    assert run.errors == 0, run.error_samples
    assert len(run.samples) == 8 and len(printed) == 8
    assert all(s.t > 0 and s.seconds > 0 for s in run.samples)
    seen = {step for s in run.samples for step in s.latency}
    assert seen == set(STEPS)
    assert all(0 < p50 <= p99 for s in run.samples for p50, p99 in s.latency.values())
    for sample in run.samples:
        assert set(sample.rss_kib) == set(SERVICES) and min(sample.rss_kib.values()) > 0
        assert set(sample.fds) == set(SERVICES) and min(sample.fds.values()) > 0
        assert sample.pg_connections > 0
        assert set(sample.store_sockets) == set(SERVICES)
    # The token service holds pooled connections to both stores; the gateway to neither.
    assert max(s.store_sockets["token"]["postgres"] for s in run.samples) > 0
    assert max(s.store_sockets["token"]["redis"] for s in run.samples) > 0
    assert all(s.store_sockets["gateway"]["postgres"] == 0 for s in run.samples)
    assert run.rest_before is not None and run.rest_after is not None
    assert min(run.rest_before.fds.values()) > 0 and min(run.rest_after.fds.values()) > 0
    # Sessions at least: one per signed-in client, under the run's prefix.
    assert max(s.redis_keys for s in run.samples) >= 2
    checks = {c.name: c for c in judge(run)}
    assert checks["errors"].passed
    assert {f"RSS {name}" for name in SERVICES} <= set(checks)
    assert {f"fds {name}" for name in SERVICES} | {"postgres connections",
                                                    "redis connections"} <= set(checks)

    drawn = ET.fromstring(svg(run, "smoke"))

    assert drawn.tag.endswith("svg")
    # Ten latency lines (p50 and p99 of each step) and one memory line per service.
    assert len(drawn.findall("{http://www.w3.org/2000/svg}polyline")) == 10 + len(SERVICES)


def _run(rss: list[int], *, errors: int = 0, pools: list[dict[str, int]] | None = None,
         stores: list[dict[str, int]] | None = None,
         at_rest: tuple[int, int, dict[str, int]] | None = (20, 20, {})) -> Run:
    """A 100-second run sampled every 10 s: warm-up 20 s, windows of ~27 s; pools of 10;
    ``at_rest``: open files before and after the load, and the store connections after."""
    plan = Plan(seconds=100, every=10, rate=1.0, workers=1, refreshes=0, rest=8)
    pools = pools or [{"otesse-token": 2, "otesse-authorize": 1}] * len(rss)
    stores = stores or [{"postgres": 2, "redis": 1}] * len(rss)
    samples = [Sample(t=10.0 * (i + 1), seconds=10.0, requests=100, errors=0, late=0,
                      latency={}, rss_kib={"token": kib}, fds={"token": 30},
                      pg_connections=sum(pg.values()), redis_used_bytes=0, redis_keys=0,
                      pg_pools=pg, store_sockets={"token": store})
               for i, (kib, pg, store) in enumerate(zip(rss, pools, stores, strict=True))]
    samples[-1] = replace(samples[-1], errors=errors)
    run = Run(plan, samples, pool_max=10)
    if at_rest is not None:
        before, after, after_stores = at_rest
        run.rest_before = AtRest({"token": before}, {"token": {}})
        run.rest_after = AtRest({"token": after}, {"token": after_stores})
    return run


FLAT = [100_000] * 10
SMALL_POOLS = {"otesse-token": 2, "otesse-authorize": 1}


@pytest.mark.parametrize("run, failed", [
    (_run([100_000] * 10), set()),
    (_run([50_000, 80_000] + [100_000] * 7 + [109_000]), set()),
    (_run([100_000] * 8 + [115_000] * 2), {"RSS token"}),
    (_run(FLAT, at_rest=(20, 60, {})), {"fds token"}),
    (_run(FLAT, at_rest=(20, 23, {})), set()),
    (_run(FLAT, at_rest=None), {"fds"}),
    (_run([100_000] * 10, errors=1), {"errors"}),
    (_run([100_000] * 9 + [0]), {"RSS token"}),
    (_run(FLAT, pools=[SMALL_POOLS] * 8 + [{"otesse-token": 10, "otesse-authorize": 10}] * 2),
     set()),
    (_run(FLAT, pools=[SMALL_POOLS] * 8 + [{**SMALL_POOLS, "": 30}] * 2),
     {"postgres connections"}),
    (_run(FLAT, pools=[SMALL_POOLS] * 8 + [{"otesse-token": 25}] * 2),
     {"postgres connections"}),
    (_run(FLAT, at_rest=(20, 39, {"postgres": 10, "redis": 9})), set()),
    (_run(FLAT, stores=[{"postgres": 2, "redis": 1}] * 8 + [{"postgres": 2, "redis": 90}] * 2),
     {"redis connections"}),
], ids=["flat passes", "growth during the warm-up is not counted",
        "fails because memory grew 15 % after warm-up",
        "fails because more files are open at rest after the load than before",
        "a few more is still flat", "fails because open files were not counted at rest",
        "fails because one request failed", "fails because the process is gone",
        "pools growing up to their bound after a burst still pass",
        "fails because connections leak outside the pools",
        "fails because a pool holds more than its bound",
        "more descriptors at rest, all pooled store connections, are not a leak",
        "fails because a service holds more Redis connections than its pool may"])
def test_the_verdict(run: Run, failed: set[str]) -> None:
    checks = judge(run)

    assert {c.name for c in checks if not c.passed} == failed


@pytest.mark.parametrize("pid, alive", [(os.getpid(), True), (2**22 + 1, False)],
                         ids=["this process", "a process that does not exist reads 0"])
def test_memory_and_open_files_are_read_from_proc(pid: int, alive: bool) -> None:
    assert (rss_kib(pid) > 0, open_fds(pid) > 0) == (alive, alive)


def test_a_run_too_short_for_two_windows_fails() -> None:
    run = _run([100_000])

    assert "windows" in {c.name for c in judge(run) if not c.passed}


@pytest.mark.parametrize("low, high, expected", [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 95, [0, 20, 40, 60, 80, 100]),
    (3, 3, [3, 3.2, 3.4, 3.6, 3.8, 4.0]),
    (0, 600.03, [0, 200, 400, 600]),
], ids=["unit range", "rounds up past the top", "an empty range still has an axis",
        "a hair past a round end stays on it"])
def test_axis_ticks_are_round(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)
