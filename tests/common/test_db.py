"""The shared PostgreSQL pool against a server of the test's own: every use is bounded in time
when the server stops answering (SIGSTOP), and connections pooled before a restart are replaced
before a statement is sent on them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace

import pytest
import pytest_asyncio

from services.common import db
from services.common.settings import Env, Secret, StoreSettings
from services.common.unavailable import is_unavailable
from tests.faults.stores import PrivatePostgres, ended_session, private_postgres

# Generous: the machine is busy.
MARGIN_SECONDS = 1.0
BOUND = db.ACQUIRE_SECONDS + db.STATEMENT_SECONDS + MARGIN_SECONDS


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    with private_postgres("otesse-db-test") as running:
        yield running


@pytest_asyncio.fixture
async def pool(server: PrivatePostgres) -> AsyncIterator[db.Pool]:
    settings = replace(StoreSettings.from_env(Env({})), database_url=Secret(server.admin_url),
                       db_pool_max=4)
    created = await db.create_pool(settings, application_name="otesse-test")
    try:
        yield created
    finally:
        server.resume()
        await created.close()


async def timed(call: Awaitable[object]) -> tuple[str, float]:
    started = time.monotonic()
    try:
        # A cap far above the bound, so that a regression fails rather than hangs.
        async with asyncio.timeout(BOUND * 4):
            await call
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - the outcome is what is tested
        outcome = type(exc).__name__
    return outcome, time.monotonic() - started


async def test_a_stopped_server_fails_every_use_within_the_bound(
        server: PrivatePostgres, pool: db.Pool) -> None:
    # Four pooled connections, then many more callers than connections.
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(4)))
    server.pause()
    results = await asyncio.gather(
        *(timed(pool.fetchval("SELECT $1::int", i)) for i in range(12)),
        timed(pool.acquire()))
    server.resume()
    assert {outcome for outcome, _ in results} == {"TimeoutError"}, results
    assert max(seconds for _, seconds in results) < BOUND, results
    # Back at once.
    assert await pool.fetchval("SELECT 1") == 1
    assert await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(8))) == [
        *range(8)]


async def test_connections_pooled_before_a_restart_are_replaced(
        server: PrivatePostgres, pool: db.Pool) -> None:
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(4)))
    server.stop()
    server.start()
    await asyncio.sleep(0.2)  # the server's closes have reached this process
    assert await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(4))) == [
        *range(4)]


async def test_a_connection_the_server_ended_fails_as_an_outage_and_is_not_reused(
        server: PrivatePostgres) -> None:
    """A fast shutdown tells each session it ends, then closes it. A statement sent between
    the two (here, the close is held back) cannot run: the failure is an outage (503), and the
    connection is not used again, so the next statement, once the server is back, runs."""
    async with ended_session(server) as pool:
        with pytest.raises(Exception) as caught:
            await pool.fetchval("SELECT 2")
        assert is_unavailable(caught.value), repr(caught.value)
        assert await pool.fetchval("SELECT 3") == 3
