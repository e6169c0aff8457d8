"""Replicas under steady load (DESIGN §9): a rolling restart of every service fails no request,
and a token replica killed outright loses no refresh token.

``CLIENTS`` flow clients (:mod:`tests.replicas.load`) run the whole flow through the public
entry while, one replica at a time, each service is sent SIGTERM, drains (``/readyz`` 503 and
gRPC health ``NOT_SERVING`` for ``OTESSE_SHUTDOWN_DRAIN_SECONDS``; HAProxy drops it, gRPC
clients move away), exits 0, starts again and is back in the rotation before the next one goes.
A summary (requests, failures, requests per replica, restart timings) is printed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import pytest_asyncio

from otesse.auth.v1 import token_pb2_grpc
from tests.replicas.cluster import DRAIN_SECONDS, SERVICES, Cluster
from tests.replicas.load import Load, Tally, signed_in_client

CLIENTS = 4
WARM_UP_SECONDS = 2.0


@pytest_asyncio.fixture
async def load(cluster: Cluster, pool: asyncpg.Pool,
               tokens: token_pb2_grpc.TokenServiceAsyncStub) -> AsyncIterator[Load]:
    async with httpx.AsyncClient(base_url=cluster.bookings_url, timeout=10.0) as bookings:
        tally = Tally()
        clients = [await signed_in_client(cluster, pool, tokens, bookings, tally)
                   for _ in range(CLIENTS)]
        running = Load(clients)
        try:
            yield running
        finally:
            await running.stop()
            await running.aclose()


@pytest.fixture
def terminal(capsys: pytest.CaptureFixture[str]) -> Iterator[list[str]]:
    """Lines printed to the terminal at the end of the test, even when output is captured."""
    lines: list[str] = []
    yield lines
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def _served(cluster: Cluster) -> dict[str, collections.Counter[str]]:
    return cluster.served_per_replica()


def _summary(title: str, tally: Tally, before: dict[str, collections.Counter[str]],
             after: dict[str, collections.Counter[str]], seconds: float) -> list[str]:
    failures = collections.Counter(f"{f.step}: {f.what}" for f in tally.failures)
    per_replica = []
    for name in after:
        served = after[name] - before[name]
        parts = [f"{served[kind]} {kind.upper() if kind == 'http' else 'gRPC'}"
                 for kind in ("http", "grpc") if served[kind]]
        per_replica.append(f"{name} {' + '.join(parts) or 0}")
    return [
        f"{title}: {tally.total} requests in {seconds:.0f} s ({tally.flows} whole flows, "
        f"{CLIENTS} clients), {len(tally.failures)} failed",
        "  requests: " + ", ".join(f"{step} {count}" for step, count in
                                   sorted(tally.requests.items())),
        "  served per replica: " + ", ".join(per_replica),
        *(f"  failure: {what} ×{count}" for what, count in failures.items()),
    ]


@pytest.mark.timeout(420)
async def test_a_rolling_restart_of_every_service_under_load_fails_no_request(
        cluster: Cluster, load: Load, terminal: list[str]) -> None:
    tally = load.phase()
    before = _served(cluster)
    started = time.monotonic()
    load.start()
    await asyncio.sleep(WARM_UP_SECONDS)
    restarts = []
    for service in SERVICES:
        for replica in cluster.of(service):
            flows = tally.flows
            timings = await cluster.restart(replica)
            dropped = (f"out of HAProxy {timings['dropped']:.2f} s, " if "dropped" in timings
                       else "")
            restarts.append(f"{replica.name} ({dropped}exited {timings['exited']:.1f} s, "
                            f"back {timings['back']:.1f} s, {tally.flows - flows} flows)")
            # Every restart happened under load.
            assert tally.flows > flows, f"no flow completed while {replica.name} restarted"
    await asyncio.sleep(WARM_UP_SECONDS)
    await load.stop()
    terminal.extend(_summary("rolling restart", tally, before, _served(cluster),
                             time.monotonic() - started))
    terminal.append(f"  drain {DRAIN_SECONDS} s; restarted in turn: " + "; ".join(restarts))
    assert not tally.failures, [f"{f.step}: {f.what}" for f in tally.failures]
    assert tally.flows > 50
    # The token endpoint reached the token replicas' edges, as the Ingress sends it, and each
    # replica was back in that rotation after its restart.
    for replica in cluster.of("token"):
        assert replica.requests_at("token-edge") > 0, replica.name


@pytest.mark.timeout(180)
async def test_a_killed_token_replica_loses_no_refresh_token(
        cluster: Cluster, load: Load, tokens: token_pb2_grpc.TokenServiceAsyncStub,
        terminal: list[str]) -> None:
    tally = load.phase()
    before = _served(cluster)
    started = time.monotonic()
    killed = cluster.of("token")[0]
    load.start()
    await asyncio.sleep(WARM_UP_SECONDS)
    await cluster.kill(killed)
    killed_at = time.monotonic()
    await asyncio.sleep(WARM_UP_SECONDS)
    await cluster.start_again(killed)
    await asyncio.sleep(WARM_UP_SECONDS)
    await load.stop()
    terminal.extend(_summary(f"SIGKILL of {killed.name}", tally, before, _served(cluster),
                             time.monotonic() - started))
    terminal.append(f"  {len(tally.failures)} requests failed (in flight on the killed "
                    f"replica); {tally.refresh_retries_answered} refreshes answered when the "
                    "client sent the same refresh token again")
    # Only what was in flight on the killed replica: at most one request per client, on the
    # token endpoint, within a moment of the kill. The load balancer in front of the token
    # edges answers those as a bad gateway or an unavailable service, or closes the client's
    # kept-alive connection without an answer (HAProxy does on a connection's later requests).
    assert len(tally.failures) <= CLIENTS, tally.failures
    for failure in tally.failures:
        assert failure.step in ("exchange", "refresh"), failure
        assert failure.what.startswith(("502", "503", "RemoteProtocolError")), failure
        assert abs(failure.at - killed_at) < 5.0, failure
    # No refresh token answered with 200 was lost: each client's latest one still works (and
    # the grant was not taken for stolen by the retries), as does the access token it gets.
    check = load.phase()
    for client in load.clients:
        assert await client.refresh(), check.failures
        assert await client.validate(), check.failures
        assert await client.call_api(), check.failures
