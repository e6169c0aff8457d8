"""gRPC is balanced per call across the token replicas (DESIGN §9), as a resource server sees
it: one channel from ``create_channel`` naming both replicas' addresses. Calls spread over both
(counted by each replica's own ``/metrics``), a replica stopped gracefully (SIGTERM: health
``NOT_SERVING``, drain, GOAWAY) fails none, and a replica killed outright (SIGKILL) fails at most
the calls in flight on it — gRPC retries the ``UNAVAILABLE`` ones on the other replica.
"""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import grpc
import httpx

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common.grpc_client import create_channel
from tests.replicas.cluster import Cluster
from tests.replicas.load import Tally, signed_in_client

VALIDATE = "/otesse.auth.v1.TokenService/ValidateToken"
CALLERS = 8
# Between two calls of one caller: bounded load on a shared machine.
PAUSE_SECONDS = 0.005


class Validations:
    """``CALLERS`` tasks validating one token over one balanced channel, as a resource server."""

    def __init__(self, cluster: Cluster, token: str) -> None:
        self._channel = create_channel(cluster.token_grpc,
                                       services=("otesse.auth.v1.TokenService",))
        self._stub: token_pb2_grpc.TokenServiceAsyncStub = token_pb2_grpc.TokenServiceStub(
            self._channel)
        self._token = token
        self.answered = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []

    async def _caller(self) -> None:
        while self._running:
            try:
                result = await self._stub.ValidateToken(
                    token_pb2.ValidateTokenRequest(token=self._token), timeout=5)
            except grpc.aio.AioRpcError as exc:
                self.failures[exc.code().name] += 1
            else:
                if result.active:
                    self.answered += 1
                else:
                    self.failures[token_pb2.ValidationReason.Name(result.reason)] += 1
            await asyncio.sleep(PAUSE_SECONDS)

    async def __aenter__(self) -> Validations:
        self._running = True
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(CALLERS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)
        await self._channel.close()

    async def until_answered(self, count: int, seconds: float = 30.0) -> None:
        target = self.answered + count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.answered < target:
            assert loop.time() < deadline, f"only {self.answered} answered"
            await asyncio.sleep(0.05)




async def access_token(cluster: Cluster, pool: asyncpg.Pool,
                       tokens: token_pb2_grpc.TokenServiceAsyncStub) -> str:
    async with httpx.AsyncClient(base_url=cluster.bookings_url) as bookings:
        client = await signed_in_client(cluster, pool, tokens, bookings, Tally())
        await client.aclose()
    return client.access_token


def calls_per_replica(cluster: Cluster) -> dict[str, int]:
    return {replica.name: replica.calls(VALIDATE)
            for replica in cluster.of("token")}


async def test_validations_spread_over_both_token_replicas(
        cluster: Cluster, pool: asyncpg.Pool, tokens: token_pb2_grpc.TokenServiceAsyncStub,
) -> None:
    token = await access_token(cluster, pool, tokens)
    before = calls_per_replica(cluster)
    for _ in range(200):
        assert (await tokens.ValidateToken(token_pb2.ValidateTokenRequest(token=token),
                                           timeout=5)).active
    after = calls_per_replica(cluster)
    spread = {name: after[name] - before[name] for name in after}
    print(f"200 ValidateToken calls over one channel, per token replica: {spread}")
    # Round robin alternates; one connection pinned to one replica would give 200 and 0.
    assert sum(spread.values()) == 200
    assert min(spread.values()) >= 80, spread


async def test_a_token_replica_stopped_gracefully_fails_no_validation(
        cluster: Cluster, pool: asyncpg.Pool, tokens: token_pb2_grpc.TokenServiceAsyncStub,
) -> None:
    token = await access_token(cluster, pool, tokens)
    stopped = cluster.of("token")[1]
    async with Validations(cluster, token) as load:
        await load.until_answered(200)
        during = load.answered
        timings = await cluster.restart(stopped)
        during = load.answered - during
        # Back in the rotation: the restarted replica answers its share again.
        since_restart = stopped.calls(VALIDATE)
        await load.until_answered(200)
        rejoined = stopped.calls(VALIDATE) - since_restart
    print(f"graceful stop of {stopped.name}: {load.answered} validations answered "
          f"({during} while it drained, stopped and started again, "
          f"{timings['back']:.1f} s), failures: {dict(load.failures)}; "
          f"{rejoined} of the next 200+ answered by the restarted replica")
    assert not load.failures
    assert during > 100
    assert rejoined > 30


async def test_a_killed_token_replica_fails_at_most_the_validations_in_flight(
        cluster: Cluster, pool: asyncpg.Pool, tokens: token_pb2_grpc.TokenServiceAsyncStub,
) -> None:
    token = await access_token(cluster, pool, tokens)
    killed = cluster.of("token")[1]
    async with Validations(cluster, token) as load:
        await load.until_answered(200)
        await cluster.kill(killed)
        await load.until_answered(300)
        await cluster.start_again(killed)
        await load.until_answered(200)
    failed = sum(load.failures.values())
    print(f"SIGKILL of {killed.name} under {CALLERS} callers: {load.answered} validations "
          f"answered, {failed} failed {dict(load.failures)} (calls in flight on it are "
          "retried on the other replica when gRPC sees UNAVAILABLE)")
    # At most one call per caller can have been in flight on the killed replica.
    assert failed <= CALLERS
    assert set(load.failures) <= {"UNAVAILABLE"}
