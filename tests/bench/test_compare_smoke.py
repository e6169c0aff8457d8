"""``make bench-peer`` works: the reference server (node-oidc-provider, as ``bench/peer`` pins
and configures it) starts in both storage modes and answers the same three requests as Otesse
(authorize for a consented user, exchange, refresh chains), every one counted, each with its
processes' CPU and memory; the medians and ratios are what they say. No speed is asserted
(DESIGN §8: never a timed test)."""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from bench import compare, flow
from bench.compare import Contender, Options, Round, durable_commits, measure
from bench.cpu import CpuMeter
from bench.http1 import Client
from bench.load import Result
from bench.reference import Storage, running_reference
from bench.stack import REDIRECT_URI, ROOT, SCOPE, service_pids
from tests.conftest import REDIS_URL
from tests.integration.people import new_person, register_app
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]

# Small enough for the test stack's per-client limit on /oauth/token (40 a minute): 12 token
# requests per app.
OPTIONS = Options(rounds=1, requests=4, concurrency=2, warmup=2)


async def otesse(stack: Stack, pool: asyncpg.Pool, database_url: str) -> Contender:
    person = await new_person(pool)
    registered = await register_app(stack.registry_grpc, redirect_uri=REDIRECT_URI,
                                    scopes=SCOPE, name="Otesse Bench Peer")
    app = flow.App(client_id=registered.client_id, client_secret=registered.client_secret,
                   redirect_uri=REDIRECT_URI, scope=SCOPE)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30.0) as browser:
        await flow.sign_in_and_consent(
            browser, person=flow.Person(email=person.email, password=person.password), app=app)
        session = flow.session_cookie(browser)
    return Contender(name="Otesse", base_url=stack.gateway, authorize_path="/oauth/authorize",
                     token_path="/oauth/token", app=app, session=session,
                     pids=service_pids(os.getpid()),
                     database_name=database_url.rsplit("/", 1)[1],
                     prefixes=("otesse_at_", "otesse_rt_"), token_grpc=stack.token_grpc,
                     token_url=f"http://localhost:{stack.env['OTESSE_TOKEN_EDGE_PORT']}")


async def _measured(contender: Contender, database_url: str,
                    options: Options = OPTIONS) -> Round:
    meter = CpuMeter(services=contender.pids, database_name=contender.database_name,
                     database_url=database_url, redis_url=REDIS_URL)
    await meter.open()
    database = await asyncpg.connect(database_url) if contender.database_name else None
    try:
        return await measure(contender, options, meter, 1, database)
    finally:
        await meter.close()
        if database is not None:
            await database.close()


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


@pytest.mark.parametrize("storage", ["redis", "memory"])
async def test_both_servers_answer_the_same_steps_without_errors(
        storage: Storage, stack: Stack, pool: asyncpg.Pool, database_url: str,
        redis_prefix: str, tmp_path: Path) -> None:
    ours = await _measured(await otesse(stack, pool, database_url), database_url)
    peer_prefix = f"{redis_prefix}peer-{storage}:"
    async with running_reference(storage, redis_url=REDIS_URL, prefix=peer_prefix,
                                 log_path=tmp_path / "peer.log") as peer:
        contender = Contender(name=peer.name, base_url=peer.base_url, authorize_path="/auth",
                              token_path="/token", app=peer.app, session=peer.session,
                              pids={"node": peer.pid}, database_name=None)
        theirs = await _measured(contender, database_url)
        # The peer issues what Otesse issues: an ES256 JWT access token for Otesse's API
        # with the app's scopes, and no id_token.
        requests = compare.Requests(contender)
        async with (Client(peer.base_url, connections=1, headers=peer.session) as browser,
                    Client(peer.base_url, connections=1) as api):
            code = await requests.authorize(browser)
            answer = await api.request("POST", "/token", headers=requests.headers,
                                       body=urlencode({
                                           "grant_type": "authorization_code", "code": code,
                                           "redirect_uri": REDIRECT_URI,
                                           "code_verifier": requests.verifier}).encode())
        async with aioredis.Redis.from_url(REDIS_URL) as client:
            keys = [k async for k in client.scan_iter(match=f"{peer_prefix}*")]
        assert (len(keys) > 0) is (storage == "redis")
    async with aioredis.Redis.from_url(REDIS_URL) as client:
        assert [k async for k in client.scan_iter(match=f"{peer_prefix}*")] == []

    body = answer.json()
    assert "id_token" not in body and body["scope"] == SCOPE
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    assert _claims(body["access_token"])["aud"] == "https://api.otesse.com"
    for measured in (ours, theirs):
        assert measured.errors == 0, (measured.warmup_error_samples,
                                      [r.error_samples for r in measured.results.values()])
        assert all(r.requests == OPTIONS.requests for r in measured.results.values())
    # ValidateToken is Otesse's own (measured against a baseline, never the peer).
    assert list(ours.results) == [*compare.STEPS, *compare.GRPC_STEPS]
    assert list(theirs.results) == list(compare.STEPS)
    assert all(r.rss_kib["node"] > 0 and "node" in r.cpu_ms for r in theirs.results.values())
    assert all("postgres" not in r.cpu_ms for r in theirs.results.values())
    assert all(set(r.rss_kib) >= {"gateway", "token", "authorize"}
               for r in ours.results.values())
    # Otesse's WAL is counted (Postgres reports it lazily: no amount is asserted); the peer
    # has no database.
    assert set(ours.wal) == set(compare.EVERY_STEP) and theirs.wal == {}
    assert all(v >= 0 for figures in ours.wal.values() for v in figures.values())
    rounds = {"Otesse": [ours], peer.name: [theirs]}
    document = compare.as_json(rounds, OPTIONS, {})
    assert document["errors"] == 0
    assert {step for step, ratios in document["ratios_otesse_over"][peer.name].items()
            if ratios} == set(compare.STEPS)
    assert "0 errors." in compare.text(rounds, OPTIONS, ["header"])


async def test_the_asyncio_generator_sends_the_same_steps(stack: Stack, pool: asyncpg.Pool,
                                                          database_url: str) -> None:
    """``--generator asyncio``: this process's own client instead of wrk, same steps, same
    checks, same counts."""
    options = replace(OPTIONS, generator="asyncio")
    measured = await _measured(await otesse(stack, pool, database_url), database_url, options)
    assert measured.errors == 0, (measured.warmup_error_samples,
                                  [r.error_samples for r in measured.results.values()])
    assert list(measured.results) == [*compare.STEPS, *compare.GRPC_STEPS]
    assert all(r.requests == OPTIONS.requests for r in measured.results.values())


def _round(name: str, cpu: float, rps: float) -> Round:
    result = Result(name="refresh", requests=100, errors=0, seconds=100 / rps, p50_ms=1.0,
                    p99_ms=2.0, concurrency=1, cpu_ms={"client": 0.1, "token": cpu,
                                                       "other": 5.0})
    return Round(name, 1, {"refresh": result}, 0, ())


def test_ratios_are_the_median_of_each_rounds_ratio() -> None:
    ours = [_round("Otesse", cpu, 1000) for cpu in (1.0, 3.0, 2.0)]
    theirs = [_round("peer", cpu, 500) for cpu in (2.0, 2.0, 1.0)]

    ratios = compare.median_ratios(ours, theirs, "refresh")
    figures = compare.median_figures(ours, "refresh")

    # Per round 0.5, 1.5, 2.0: the median is 1.5 (the ratio of the medians would be 1.0).
    assert ratios["server_cpu"] == pytest.approx(1.5)
    assert ratios["rps"] == pytest.approx(2.0)
    # The load generator and the rest of the machine are not the server's work.
    assert figures["server_cpu_ms"] == pytest.approx(2.0)
    assert figures["client_cpu_ms"] == pytest.approx(0.1)
    assert math.isnan(compare.median_ratios(ours, [_round("peer", 0.0, 500)],
                                            "refresh")["server_cpu"])


async def test_postgres_commits_are_durable_before_the_comparison(database_url: str) -> None:
    assert await durable_commits(database_url) == "on"


def test_an_a_a_run_keeps_its_two_contenders_apart() -> None:
    """``--candidate X --baseline X``: the same code on the same interpreter (to see the noise)
    is two contenders, each with its own rounds."""
    venv = ROOT / ".venv"
    candidate = compare.contender_name("HEAD", venv)
    assert candidate.startswith("Otesse @ ") and compare.contender_name(None, venv) == "Otesse"
    assert compare.contender_name("HEAD", venv, taken=candidate) == f"{candidate} (baseline)"
    assert compare.contender_name("HEAD", venv, taken="Otesse") == candidate
