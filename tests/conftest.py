"""Fixtures every test shares: a throwaway database and Redis key space for this run, and the
registry gRPC server on a free port.

Nothing here touches a developer's data: the database is ``otesse_test_<random>`` (created,
migrated, dropped at the end) and every Redis key starts with ``otesse-test-<random>:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

# The tests import free_port from here; bench/ports.py is its one implementation.
from bench.ports import free_port as free_port
from otesse.auth.v1 import registry_pb2_grpc
from services.cli.migrate import migrate_all
from services.common.client_changes import ClientChangeFeed
from services.common.grpc_client import create_channel
from services.common.redis_lean import LeanRedis
from services.common.settings import Env, Secret, StoreSettings
from services.registry.app import create_server as create_registry_server
from services.registry.settings import RegistrySettings
from tests.callers import as_service

if TYPE_CHECKING:
    from tests.faults.stores import PrivateRedis

ADMIN_URL = os.environ.get("OTESSE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OTESSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = secrets.token_hex(5)


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest_asyncio.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"otesse_test_{RUN_ID}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = _database_url(name)
        await migrate_all(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"otesse-test-{RUN_ID}:"


@pytest.fixture(scope="session")
def store_settings(database_url: str, redis_prefix: str) -> StoreSettings:
    return replace(StoreSettings.from_env(Env({})), database_url=Secret(database_url),
                   redis_url=Secret(REDIS_URL), redis_prefix=redis_prefix)


@pytest.fixture(scope="session")
def test_env(database_url: str, redis_prefix: str) -> dict[str, str]:
    """Environment for service processes started by tests: this run's stores only."""
    return {"OTESSE_DATABASE_URL": database_url, "OTESSE_REDIS_URL": REDIS_URL,
            "OTESSE_REDIS_PREFIX": redis_prefix}


@pytest_asyncio.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    assert created is not None
    yield created
    await created.close()


@pytest_asyncio.fixture(scope="session")
async def redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own (tests/faults/stores.py), which it may pause, kill
    and restart; killed afterwards."""
    from tests.faults.stores import PrivateRedis  # it imports this module

    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest_asyncio.fixture(scope="session")
async def lean_redis() -> AsyncIterator[LeanRedis]:
    """The hot paths' Redis client (services.common.redis_lean), on the shared Redis."""
    client = LeanRedis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(scope="session")
async def registry_address(store_settings: StoreSettings, pool: asyncpg.Pool,
                           ) -> AsyncIterator[str]:
    """A real registry gRPC server on a free port, for every test that needs clients."""
    settings = replace(RegistrySettings.from_env(Env({})), stores=store_settings)
    server = create_registry_server(settings, pool, port=0)
    await server.start()
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace=1.0)


@pytest_asyncio.fixture(scope="session")
async def registry(registry_address: str) -> AsyncIterator[registry_pb2_grpc.ClientRegistryStub]:
    # The operator CLI's identity: registering and changing clients is its privilege.
    channel = create_channel(registry_address, services=("otesse.auth.v1.ClientRegistry",),
                             interceptors=as_service("cli", "registry"))
    yield registry_pb2_grpc.ClientRegistryStub(channel)
    await channel.close()


async def listening(feed: ClientChangeFeed, timeout: float = 10.0) -> None:
    """Waits until ``feed`` hears client changes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not feed.connected:
        assert asyncio.get_running_loop().time() < deadline, "the change feed never connected"
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def client_changes(database_url: str) -> AsyncIterator[ClientChangeFeed]:
    """A real client change feed on this run's database, listening."""
    feed = ClientChangeFeed(database_url, application_name="otesse-test-client-changes")
    task = asyncio.create_task(feed.run())
    try:
        await listening(feed)
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def artifacts_dir() -> Iterator[str]:
    path = os.path.join(os.path.dirname(__file__), "artifacts")
    os.makedirs(path, exist_ok=True)
    yield path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compose-project", default="", metavar="NAME",
                     help="the docker-compose.yml project that tests/containers drive "
                          "(scripts/test-containers starts it and passes this)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # tests/containers need the containers `make test-containers` starts; elsewhere there is
    # nothing for them to test, so they are not collected (rather than skipped).
    if collection_path.name == "containers" and collection_path.parent == Path(__file__).parent:
        return not config.getoption("--compose-project")
    return None
