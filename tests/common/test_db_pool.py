"""The services' own PostgreSQL pool (services.common.db.Pool) against the shared server: how
many connections it opens, which one a caller gets, when one is dropped or closed, and that
every wait is bounded. tests/common/test_db.py holds it to its bounds through outages."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import asyncpg
import pytest
import pytest_asyncio

from services.common import db
from services.common.settings import Env, Secret, StoreSettings
from services.common.unavailable import is_unavailable
from tests.conftest import ADMIN_URL

Factory = Callable[..., Awaitable[db.Pool]]


@pytest_asyncio.fixture
async def make_pool() -> AsyncIterator[Factory]:
    """Pools with an application name of their own, so the server's view of their
    connections can be read; every one is closed at the end."""
    made: list[db.Pool] = []

    async def make(**options: object) -> db.Pool:
        name = f"otesse-pool-test-{secrets.token_hex(4)}"

        def connect() -> Awaitable[db.Connection]:
            return asyncpg.connect(ADMIN_URL, command_timeout=db.STATEMENT_SECONDS,
                                   server_settings={"application_name": name})

        pool = db.Pool(connect, **{"max_size": 2, **options})  # type: ignore[arg-type]
        pool.application_name = name  # type: ignore[attr-defined]
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def server_side(pool: db.Pool) -> int:
    """The pool's sessions as the server counts them."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        count: int = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            pool.application_name)  # type: ignore[attr-defined]
        return count
    finally:
        await admin.close()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


PID = "SELECT pg_backend_pid()"


async def test_no_connection_until_the_first_statement_then_the_last_freed_is_reused(
        make_pool: Factory) -> None:
    pool = await make_pool(max_size=3)
    assert pool.get_size() == 0 and await server_side(pool) == 0
    pids = await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.1)")
                                  for _ in range(3)))
    assert pool.get_size() == 3 and len(set(pids)) == 3
    # One caller at a time: always the connection freed last, so the others may idle out.
    first = await pool.fetchval(PID)
    assert [await pool.fetchval(PID) for _ in range(5)] == [first] * 5
    assert pool.get_size() == 3 and pool.get_idle_size() == 3 and await server_side(pool) == 3


async def test_never_more_connections_than_its_size_whatever_the_callers(
        make_pool: Factory) -> None:
    pool = await make_pool(max_size=3)
    results = await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(200)))
    assert results == list(range(200))
    seen = await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.02)")
                                  for _ in range(30)))
    assert len(set(seen)) == 3
    assert pool.get_size() == 3 and await server_side(pool) == 3


async def test_waiting_for_a_connection_is_bounded_and_then_served(make_pool: Factory) -> None:
    pool = await make_pool(max_size=1, acquire_timeout=0.3)
    async with pool.acquire() as held:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT 1")
        assert 0.25 < time.monotonic() - started < 2.0
        waiting = asyncio.create_task(pool.fetchval(PID))
        await asyncio.sleep(0.05)
        pid = await held.fetchval(PID)
    # The waiter gets the very connection given back.
    assert await waiting == pid
    assert pool.get_size() == 1


async def test_callers_are_served_in_the_order_they_came(make_pool: Factory) -> None:
    pool = await make_pool(max_size=1)
    served: list[int] = []

    async def one(number: int) -> None:
        async with pool.acquire():
            served.append(number)
            await asyncio.sleep(0.01)

    async with pool.acquire():
        tasks = []
        for number in range(6):
            tasks.append(asyncio.create_task(one(number)))
            await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert served == list(range(6))


async def test_a_transaction_left_open_is_rolled_back_before_the_next_caller(
        make_pool: Factory) -> None:
    pool = await make_pool(max_size=1)
    table = f"pool_test_{secrets.token_hex(4)}"
    async with pool.acquire() as connection:
        await connection.execute("BEGIN")
        await connection.execute(f"CREATE TABLE {table} (x int)")
        pid = await connection.fetchval(PID)
    async with pool.acquire() as connection:
        assert not connection.is_in_transaction()
        assert await connection.fetchval(PID) == pid
        assert await connection.fetchval("SELECT to_regclass($1)::text", table) is None


async def test_a_statement_error_keeps_the_connection(make_pool: Factory) -> None:
    pool = await make_pool(max_size=1)
    pid = await pool.fetchval(PID)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await pool.fetchval("SELECT 1/0")
    async with pool.acquire() as connection, connection.transaction():
        with pytest.raises(asyncpg.UndefinedTableError):
            await connection.execute("SELECT * FROM no_such_table_anywhere")
    assert await pool.fetchval(PID) == pid and pool.get_size() == 1


@pytest.mark.parametrize("how", ["statement timeout", "cancelled", "session ended"])
async def test_a_connection_in_an_unknown_state_is_dropped_and_replaced(
        make_pool: Factory, how: str) -> None:
    pool = await make_pool(max_size=1)
    pid = await pool.fetchval(PID)
    if how == "statement timeout":
        with pytest.raises(TimeoutError):
            await pool.fetchval("SELECT pg_sleep(5)", timeout=0.1)
    elif how == "cancelled":
        task = asyncio.create_task(pool.fetchval("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
        # The server's word has arrived: the connection is not lent again.
    assert pool.get_size() in (0, 1)
    again = await pool.fetchval(PID)
    assert again != pid and pool.get_size() == 1
    assert await eventually(lambda: _is(server_side(pool), 1))


async def _is(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def test_idle_connections_are_closed_after_their_time(make_pool: Factory) -> None:
    pool = await make_pool(max_size=2, idle_seconds=0.3)
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(2)))
    assert await server_side(pool) == 2
    assert await eventually(lambda: _is(server_side(pool), 0))
    assert pool.get_size() == 0 and pool.get_idle_size() == 0
    assert await pool.fetchval("SELECT 7") == 7 and pool.get_size() == 1


async def test_a_connection_is_replaced_after_its_uses(make_pool: Factory) -> None:
    pool = await make_pool(max_size=1, max_uses=3)
    pids = [await pool.fetchval(PID) for _ in range(5)]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4]
    # The first was closed, politely, once it had served its third statement.
    assert await eventually(lambda: _is(server_side(pool), 1))
    assert pool.get_size() == 1


@pytest.mark.parametrize("how", ["close", "terminate"])
async def test_a_closed_pool_refuses_as_an_outage_and_closes_what_comes_back(
        make_pool: Factory, how: str) -> None:
    pool = await make_pool(max_size=1, acquire_timeout=2.0)
    async with pool.acquire() as connection:
        waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        if how == "close":
            await pool.close()
        else:
            pool.terminate()
        with pytest.raises(db.PoolClosed) as refused:
            await waiting
        assert is_unavailable(refused.value)
        assert await connection.fetchval("SELECT 2") == 2
    with pytest.raises(db.PoolClosed):
        await pool.fetchval("SELECT 3")
    assert await eventually(lambda: _is(server_side(pool), 0))
    assert pool.get_size() == 0


async def test_a_connection_awaited_from_acquire_goes_back_with_release(
        make_pool: Factory) -> None:
    pool = await make_pool(max_size=1, acquire_timeout=0.2)
    connection = await pool.acquire()
    with pytest.raises(TimeoutError):
        await pool.fetchval("SELECT 1")
    await pool.release(connection)
    assert await pool.fetchval("SELECT 1") == 1
    with pytest.raises(asyncpg.InterfaceError, match="not lent"):
        await pool.release(connection)


async def test_idle_connections_close_down_to_the_minimum_kept(make_pool: Factory) -> None:
    pool = await make_pool(max_size=3, min_size=1, idle_seconds=0.3)
    await asyncio.gather(*(pool.fetchval("SELECT pg_sleep(0.05)") for _ in range(3)))
    assert await server_side(pool) == 3
    assert await eventually(lambda: _is(server_side(pool), 1))
    await asyncio.sleep(0.6)  # a second round of the idle timer leaves the last one open
    assert await server_side(pool) == 1 and pool.get_size() == 1


async def test_the_services_pool_takes_its_bounds_from_the_settings() -> None:
    settings = replace(StoreSettings.from_env(Env({"OTESSE_DB_POOL_MIN": "3",
                                                   "OTESSE_DB_POOL_MAX": "5"})),
                       database_url=Secret(ADMIN_URL))
    pool = await db.create_pool(settings, application_name="otesse-pool-test")
    try:
        assert (pool._min_size, pool._max_size) == (3, 5)
        assert pool.get_size() == 0  # nothing opened before the first statement
        assert await pool.fetchval("SELECT current_setting('application_name')") == (
            "otesse-pool-test")
        assert await pool.fetchval("SELECT current_setting('jit')") == "off"
    finally:
        await pool.close()
