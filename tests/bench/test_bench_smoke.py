"""The benchmark itself works: its steps, driven with a handful of requests against the
integration tests' stack (the same processes ``make bench`` starts), all succeed and are counted,
and its Redis counter sees what DESIGN §8 promises. No speed is asserted (DESIGN §8: never a
timed test)."""

from __future__ import annotations

import os
from dataclasses import replace

import asyncpg
import pytest

from bench import flow, load, report
from bench.cpu import CpuMeter
from bench.load import StepFailed
from bench.measure import Options, measure_all
from bench.stack import REDIRECT_URI, SCOPE, service_pids
from bench.stack import Stack as BenchStack
from bench.stores import store_touches
from tests.conftest import REDIS_URL
from tests.integration.people import new_person, register_app
from tests.integration.stack import SERVICES, Stack

pytest_plugins = ["tests.integration.fixtures"]

STEPS = ["authorize", "authorize (direct)", "exchange", "exchange (direct)", "refresh",
         "refresh (direct)", "validate (gRPC)", "revalidate (gRPC)", "GET /v1/bookings"]


async def bench_target(stack: Stack, pool: asyncpg.Pool) -> BenchStack:
    person = await new_person(pool)
    app = await register_app(stack.registry_grpc, redirect_uri=REDIRECT_URI, scopes=SCOPE,
                             name="Otesse Bench")
    env = stack.env
    return BenchStack(
        gateway_url=stack.gateway,
        authorize_url=f"http://127.0.0.1:{env['OTESSE_AUTHORIZE_PORT']}",
        token_url=f"http://127.0.0.1:{env['OTESSE_TOKEN_HTTP_PORT']}",
        token_public_url=f"http://localhost:{env['OTESSE_TOKEN_EDGE_PORT']}",
        token_grpc=stack.token_grpc, bookings_url=stack.bookings,
        person=flow.Person(email=person.email, password=person.password),
        app=flow.App(client_id=app.client_id, client_secret=app.client_secret,
                     redirect_uri=REDIRECT_URI, scope=SCOPE),
        database_name="", pids={})


async def test_every_step_of_the_flow_is_measured_without_errors(
        stack: Stack, pool: asyncpg.Pool) -> None:
    target = await bench_target(stack, pool)

    measured = await measure_all(target, Options(requests=4, concurrency=2, warmup=2))

    assert [r.name for r in measured.results] == STEPS
    failures = [(r.name, r.error_samples) for r in measured.results if r.errors]
    assert measured.errors == 0, (failures, measured.warmup_error_samples)
    assert [r.requests for r in measured.results] == [4, 2, 4, 2, 4, 2, 4, 4, 4]
    assert all(r.rps > 0 and 0 < r.p50_ms <= r.p99_ms for r in measured.results)


async def test_redis_commands_are_counted_per_request(stack: Stack, pool: asyncpg.Pool,
                                                      redis_prefix: str) -> None:
    target = await bench_target(stack, pool)
    # DESIGN §8: a token exchange takes its code in one Redis round trip (an EVALSHA: the code
    # is taken and a "used" marker left by one script); "a validation is … one Redis round
    # trip". The test stack keeps two rate limits on /oauth/token, each one EVALSHA (a token
    # bucket script) per exchange, both absent from `make bench`: the gateway's per-address
    # check (here, of failed client authentications) and the token service's budget of the
    # client it has authenticated.
    expected = {"EVALSHA": 3.0}
    # The whole test session shares this key prefix, and its token services re-assert recent
    # revocations in the background every few seconds: a sample that catches one of those
    # writes is taken again. A command the hot path really sends shows up in every sample.
    seen = []
    for _ in range(3):
        touches = await store_touches(target, redis_url=REDIS_URL, prefix=redis_prefix,
                                      sample=3)
        round_trips = {k: v for k, v in touches["exchange"].items() if not k.startswith("lua:")}
        validation = sum(touches["validate (gRPC)"].values())
        seen.append((round_trips, validation))
        if round_trips == expected and validation == 1:
            break
    assert seen[-1] == (expected, 1), seen
    assert touches["authorize"]


@pytest.mark.parametrize("outcomes, errors", [
    ([None, None, None], 0),
    ([None, StepFailed("answered 400"), ConnectionError("reset")], 2),
], ids=["all succeed", "a wrong answer and a transport error both count"])
async def test_a_failing_request_is_counted_and_never_stops_the_run(
        outcomes: list[Exception | None], errors: int) -> None:
    async def step(index: int) -> None:
        failure = outcomes[index]
        if failure is not None:
            raise failure

    result = await load.run("step", step, total=len(outcomes), concurrency=2)

    assert (result.requests, result.errors) == (len(outcomes), errors)
    assert len(result.error_samples) == errors


async def test_each_measurement_reads_the_cpu_and_memory_of_every_service(
        stack: Stack, pool: asyncpg.Pool, database_url: str) -> None:
    # The integration stack's services are this test process's own children.
    target = replace(await bench_target(stack, pool), pids=service_pids(os.getpid()),
                     database_name=database_url.rsplit("/", 1)[1])
    options = Options(requests=4, concurrency=2, warmup=2)
    meter = CpuMeter(services=target.pids, database_name=target.database_name,
                     database_url=database_url, redis_url=REDIS_URL)
    await meter.open()
    try:
        measured = await measure_all(target, options, meter)
    finally:
        await meter.close()

    assert measured.errors == 0
    for result in measured.results:
        assert set(result.rss_kib) == set(SERVICES) and min(result.rss_kib.values()) > 0
        assert {"client", "other", "gateway", "token"} <= set(result.cpu_ms)
        assert result.as_json()["rss_mib"]
    assert "Resident memory (MiB, VmRSS)" in report.text(measured, options, report.machine(),
                                                          {})
