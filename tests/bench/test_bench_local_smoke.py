"""``make bench-local`` itself works: every measurement, driven with a handful of tokens and
samples against the integration tests' stack, runs without a failed step and records each
figure. No speed is asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import os
from dataclasses import replace

import asyncpg

from bench import flow
from bench.local_validation import Bench, parse
from bench.stack import REDIRECT_URI, SCOPE, service_pids
from tests.bench.test_bench_smoke import bench_target
from tests.integration.people import new_person, register_app
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]


async def test_every_local_validation_figure_is_measured(stack: Stack,
                                                         pool: asyncpg.Pool) -> None:
    target = await bench_target(stack, pool)
    person = await new_person(pool)
    app = await register_app(stack.registry_grpc, redirect_uri=REDIRECT_URI, scopes=SCOPE,
                             name="Otesse Bench load")
    second = (flow.Person(email=person.email, password=person.password),
              flow.App(client_id=app.client_id, client_secret=app.client_secret,
                       redirect_uri=REDIRECT_URI, scope=SCOPE))
    # The integration stack's services are this test process's own children.
    target = replace(target, pids=service_pids(os.getpid()),
                     clients=((target.person, target.app), second))
    bench = Bench(target, parse(["--tokens", "12", "--requests", "20", "--concurrency", "2",
                                 "--subscribers", "2", "--watchers", "2", "--samples", "2",
                                 "--rest-seconds", "0.5"]))

    await bench.run()

    out = bench.out
    assert out["validate_token_no_subscriber"]["rps"] > 0
    assert out["validate_token_with_subscribers"]["rps"] > 0
    assert out["feed_cpu_ms_per_second_per_subscriber"] >= 0
    assert out["local"]["first_sight_ms"] > 0 and out["local"]["repeat_ms"] > 0
    for phase in ("revoke_at_rest", "revoke_under_load"):
        assert set(out[phase]) == {"POST /oauth/revoke", "Authorized apps revoke",
                                   "refresh token reuse"}
        assert all(path["samples"] == 2 and 0 < path["p50_ms"] <= path["p99_ms"]
                   for path in out[phase].values())
