"""The fault suite's world: a PostgreSQL and a Redis of its own (:mod:`tests.faults.stores`),
PostgreSQL reached through a TCP proxy that can cut the network, the whole stack started on them
(:func:`tests.integration.stack.running_stack`), and the load's clients. Shared by every fault
of the package, which take turns; each fault's timings are printed at the end of the run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import pytest_asyncio

from otesse.auth.v1 import token_pb2_grpc
from services.cli.migrate import migrate_all
from services.common.grpc_client import create_channel
from tests.faults.load import Load, Record, new_client
from tests.faults.stores import PrivatePostgres, PrivateRedis, private_postgres
from tests.integration.stack import ServiceProcesses, Stack, running_stack
from tests.proxy import ProxyThread

CLIENTS = 6
DATABASE = "otesse"
# Production's values where the shared test stack shortens them, and a per-client budget far
# above the load (it still goes through Redis on every token request).
SETTINGS = {
    "OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS": "10",
    "OTESSE_TOKEN_RATE_PER_CLIENT": "6000/60",
}
# One line per fault: what the README's table shows.
TIMINGS: list[str] = []


@dataclass(frozen=True)
class World:
    postgres: PrivatePostgres
    redis: PrivateRedis
    # Between the services and PostgreSQL.
    network: ProxyThread
    stack: Stack
    # Straight to PostgreSQL: the test's own reads and writes never go through the cut.
    pool: asyncpg.Pool
    load: Load

    @property
    def processes(self) -> ServiceProcesses:
        assert self.stack.processes is not None
        return self.stack.processes


@pytest.fixture(scope="package")
def stores(tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    with private_postgres("otesse-faults") as postgres:
        try:
            redis.start()
            yield postgres, redis
        finally:
            redis.kill()


@pytest_asyncio.fixture(scope="package")
async def world(stores: tuple[PrivatePostgres, PrivateRedis],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    postgres, redis = stores
    admin = await asyncpg.connect(postgres.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    direct = postgres.admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    await migrate_all(direct)
    network = ProxyThread("127.0.0.1", postgres.port)
    network.start()
    env = {"OTESSE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{network.port}/{DATABASE}",
           "OTESSE_REDIS_URL": redis.url, "OTESSE_REDIS_PREFIX": "otesse-faults:"}
    pool = await asyncpg.create_pool(direct, min_size=1, max_size=4)
    assert pool is not None
    channel = None
    try:
        with running_stack(env, tmp_path_factory.mktemp("logs"), settings=SETTINGS) as stack:
            channel = create_channel(stack.token_grpc,
                                     services=("otesse.auth.v1.TokenService",))
            tokens = token_pb2_grpc.TokenServiceStub(channel)
            record = Record()
            async with httpx.AsyncClient(base_url=stack.bookings,
                                         timeout=20.0) as bookings:
                clients = [await new_client(gateway=stack.gateway,
                                            registry_grpc=stack.registry_grpc,
                                            bookings=bookings, pool=pool, tokens=tokens,
                                            record=record, seed=seed)
                           for seed in range(CLIENTS)]
                load = Load(clients, record)
                try:
                    yield World(postgres, redis, network, stack, pool, load)
                finally:
                    await load.aclose()
    finally:
        if channel is not None:
            await channel.close()
        await pool.close()
        network.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("faults: outage and recovery")
        for line in TIMINGS:
            terminalreporter.write_line(line)
