"""The PostgreSQL pool every service opens in its lifespan.

Tuned for hot paths of one statement: statements are prepared once per connection and cached;
a released connection is only rolled back if it was left in a transaction (asyncpg's default
reset runs several statements per release); JIT is off for short queries. The pool starts
empty, so a service whose database is down starts anyway, answers 503 / UNAVAILABLE, and
serves again as soon as the database returns.

Every use of the pool is bounded in time, whatever the database does — refuses connections,
restarts, or stops answering (a stopped server, a network that drops packets):

* waiting for a connection (a free one, or a new one connected) takes at most
  :data:`ACQUIRE_SECONDS` (asyncpg's own query helpers would wait forever);
* a statement takes at most :data:`STATEMENT_SECONDS`; one that times out drops its
  connection (asyncpg would otherwise ask the server to cancel it, on a new connection, and
  hold the request for as long again while a stopped server does not answer).

A connection the server closed (a restart) is noticed and replaced as it leaves the pool, so
no statement is sent on it; one the server has said it ends but not yet closed fails its next
statement without sending it (an outage: the server is going away) and is not used again.
So a store call fails, with an error callers answer as 503 / UNAVAILABLE, within
``ACQUIRE_SECONDS + STATEMENT_SECONDS`` of when it began.

The pool is this module's own (:class:`Pool`), not asyncpg's: on the hot paths asyncpg's pool
cost two to three times the statement itself in this process's CPU (a task and a timer to bound
every acquire, a shielded task and a timeout for every release, a timer re-armed per release
for the idle limit; bench/README.md). Here a free connection is taken and given back without
awaiting anything; only waiting for a connection, or opening one, is bounded with a timeout.
tests/common/test_db.py holds it to the bounds above against a server of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, TypeAlias

import asyncpg

from services.common.settings import StoreSettings

ACQUIRE_SECONDS = 1.0
STATEMENT_SECONDS = 1.5
# A connection idle this long is closed (the server's memory and connection slots go back).
IDLE_SECONDS = 300.0
# A connection is closed after this many uses: the server-side state a long session gathers
# (prepared statements, caches) is let go now and then.
MAX_USES = 50_000
# Closing a connection politely (a Terminate message) waits at most this long.
CLOSE_SECONDS = 2.0
# Postgres ends a session with one of these severities: its connection is not used again.
_SESSION_ENDING = frozenset({"FATAL", "PANIC"})

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


class PoolClosed(asyncpg.InterfaceError):
    """The pool was closed: a service shutting down."""


class _Slot:
    """A pooled connection, with how often it was used and since when it is idle."""

    __slots__ = ("connection", "idle_since", "uses")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.uses = 0
        self.idle_since = 0.0


def _ends_the_connection(failure: BaseException) -> bool:
    """Whether a connection that met ``failure`` may be broken or in an unknown state: a
    statement timeout (the statement may still run), a cancellation (the reply may still come),
    a lost or refused connection, or the server ending the session."""
    if isinstance(failure, asyncpg.PostgresError):
        return (getattr(failure, "severity", None) in _SESSION_ENDING
                or str(getattr(failure, "sqlstate", "")).startswith(("08", "57P")))
    # InternalClientError: a statement sent while the connection still read the server's
    # last words (services.common.unavailable).
    return isinstance(failure, (TimeoutError, asyncio.CancelledError, OSError,
                                asyncpg.InterfaceError, asyncpg.InternalClientError))


class Pool:
    """At most ``max_size`` connections, opened on demand (none at start) and reused last in,
    first out, so the fewest stay busy and the rest reach ``idle_seconds`` unused and close,
    down to ``min_size`` kept open.

    * :meth:`fetch`, :meth:`fetchrow`, :meth:`fetchval` and :meth:`execute` run one statement
      on a pooled connection; ``async with pool.acquire() as connection`` lends one for
      several (a transaction).
    * A caller that finds no free connection waits, first come first served, at most
      ``acquire_timeout`` seconds in all (opening a connection included): then
      :class:`TimeoutError`.
    * A connection is checked as it leaves the pool (one the server closed is replaced), and
      as it comes back: left in a transaction, it is rolled back; after a failure that may
      have broken it (:func:`_ends_the_connection`), it is dropped, and its place goes to the
      next waiter, who opens a new one.
    """

    def __init__(self, connect: Callable[[], Awaitable[Connection]], *, max_size: int,
                 min_size: int = 0, acquire_timeout: float = ACQUIRE_SECONDS,
                 idle_seconds: float = IDLE_SECONDS, max_uses: int = MAX_USES) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError("need 1 <= max_size and 0 <= min_size <= max_size")
        self._connect = connect
        self._max_size = max_size
        self._min_size = min_size
        self._acquire_timeout = acquire_timeout
        self._idle_seconds = idle_seconds
        self._max_uses = max_uses
        # Free connections, the most recently used last.
        self._idle: deque[_Slot] = deque()
        # Connections open, lent or being opened: never more than max_size.
        self._open = 0
        # Callers waiting for a connection: each gets a free one, or None (a place freed up:
        # open a connection).
        self._waiters: deque[asyncio.Future[_Slot | None]] = deque()
        # Each connection lent by awaiting acquire(), until release() gives it back.
        self._lent: dict[Connection, _Slot] = {}
        self._closed = False
        self._reaper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- one statement -------------------------------------------------------------------

    async def fetch(self, query: str, *args: Any,
                    timeout: float | None = None) -> list[asyncpg.Record]:
        result: list[asyncpg.Record] = await self._one(asyncpg.Connection.fetch, query, args,
                                                       timeout)
        return result

    async def fetchrow(self, query: str, *args: Any,
                       timeout: float | None = None) -> asyncpg.Record | None:
        result: asyncpg.Record | None = await self._one(asyncpg.Connection.fetchrow, query,
                                                        args, timeout)
        return result

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._one(asyncpg.Connection.fetchval, query, args, timeout)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        result: str = await self._one(asyncpg.Connection.execute, query, args, timeout)
        return result

    async def _one(self, statement: Callable[..., Awaitable[Any]], query: str,
                   args: tuple[Any, ...], timeout: float | None) -> Any:
        """``statement`` (a method of asyncpg's connection) on a pooled connection."""
        slot = self._take_idle() or await self._wait_for_slot()
        try:
            result = await statement(slot.connection, query, *args, timeout=timeout)
        except BaseException as failure:
            await self._give_back(slot, failure)
            raise
        await self._done_with(slot)
        return result

    # -- a connection lent -----------------------------------------------------------------

    def acquire(self, *, timeout: float | None = None) -> _Lent:
        """``async with pool.acquire() as connection``; ``timeout`` bounds the wait for it
        (default ``acquire_timeout``). Awaited instead, it returns the connection, which the
        caller gives back with :meth:`release`."""
        return _Lent(self, self._acquire_timeout if timeout is None else timeout)

    async def release(self, connection: Connection) -> None:
        """Gives back a connection :meth:`acquire` returned when awaited."""
        slot = self._lent.pop(connection, None)
        if slot is None:
            raise asyncpg.InterfaceError("this connection was not lent by this pool")
        await self._give_back(slot, None)

    async def _lend(self, timeout: float) -> _Slot:
        return self._take_idle() or await self._wait_for_slot(timeout)

    async def _lend_until_released(self, timeout: float) -> Connection:
        slot = await self._lend(timeout)
        self._lent[slot.connection] = slot
        return slot.connection

    # -- the pool itself -------------------------------------------------------------------

    def _take_idle(self) -> _Slot | None:
        """A free connection that is still open, without waiting; None when there is none."""
        if self._closed:
            raise PoolClosed("the database pool is closed")
        while self._idle:
            slot = self._idle.pop()
            if not slot.connection.is_closed():
                return slot
            self._forget(slot)
        return None

    async def _wait_for_slot(self, timeout: float | None = None) -> _Slot:
        """A connection: a free one handed over by a caller who finished, or a new one when
        fewer than ``max_size`` are open; at most ``timeout`` seconds in all."""
        async with asyncio.timeout(self._acquire_timeout if timeout is None else timeout):
            while True:
                slot = self._take_idle()
                if slot is not None:
                    return slot
                if self._open < self._max_size:
                    return await self._open_one()
                waiter: asyncio.Future[_Slot | None] = \
                    asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    handed = await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        # Handed over just as this caller gave up: pass it on.
                        self._pass_on(waiter.result())
                    raise
                if handed is not None:
                    if not handed.connection.is_closed():
                        return handed
                    self._forget(handed)

    async def _open_one(self) -> _Slot:
        self._open += 1
        try:
            connection = await self._connect()
        except BaseException:
            self._open -= 1
            self._pass_on(None)
            raise
        if self._closed:
            connection.terminate()
            self._open -= 1
            raise PoolClosed("the database pool is closed")
        return _Slot(connection)

    async def _done_with(self, slot: _Slot) -> None:
        """Takes back a connection after statements that went well."""
        if slot.connection.is_in_transaction():
            await self._give_back(slot, None)
        else:
            self._put(slot)

    def _put(self, slot: _Slot) -> None:
        """Takes back a connection, fit for use (not in a transaction, no failure)."""
        slot.uses += 1
        if self._closed or slot.uses >= self._max_uses or slot.connection.is_closed():
            self._retire(slot)
            return
        self._pass_on(slot)

    async def _give_back(self, slot: _Slot, failure: BaseException | None) -> None:
        connection = slot.connection
        if failure is not None and _ends_the_connection(failure):
            connection.terminate()
            self._forget(slot)
            return
        if connection.is_closed():
            self._forget(slot)
            return
        if connection.is_in_transaction():
            try:
                async with asyncio.timeout(STATEMENT_SECONDS):
                    await connection.execute("ROLLBACK")
            except BaseException:
                connection.terminate()
                self._forget(slot)
                raise
        self._put(slot)

    def _pass_on(self, slot: _Slot | None) -> None:
        """A free connection (or, None, a free place) to the first caller still waiting;
        else the connection goes idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        if slot is None:
            return
        if self._closed:
            self._retire(slot)
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        slot.idle_since = loop.time()
        self._idle.append(slot)
        if self._reaper is None:
            self._reaper = loop.call_at(slot.idle_since + self._idle_seconds, self._reap)

    def _reap(self) -> None:
        """Closes the connections idle for :data:`IDLE_SECONDS`; runs again when the next one
        will have been (one timer per pool, not one per connection)."""
        self._reaper = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() - self._idle_seconds
        while (self._idle and self._idle[0].idle_since <= deadline
               and self._open > self._min_size):
            self._retire(self._idle.popleft())
        if self._open <= self._min_size:
            # The rest are kept; the timer is armed again when one comes back.
            return
        if self._idle and not self._closed:
            self._reaper = loop.call_at(self._idle[0].idle_since + self._idle_seconds,
                                        self._reap)

    def _forget(self, slot: _Slot) -> None:
        """A connection that is closed or dropped: its place is free for a new one."""
        self._open -= 1
        self._pass_on(None)

    def _retire(self, slot: _Slot) -> None:
        """Closes a connection politely, in the background, and frees its place."""
        connection = slot.connection
        self._forget(slot)
        if connection.is_closed():
            return
        task = asyncio.get_running_loop().create_task(_close(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Closes every free connection and every lent one as it comes back; callers waiting
        get :class:`PoolClosed`."""
        self._shut()
        while self._idle:
            self._retire(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def terminate(self) -> None:
        """Closes every free connection at once, without a word to the server; callers
        waiting get :class:`PoolClosed`, lent connections are closed as they come back."""
        self._shut()
        while self._idle:
            slot = self._idle.pop()
            slot.connection.terminate()
            self._open -= 1
        for task in self._closing:
            task.cancel()

    def _shut(self) -> None:
        """No more lending: the idle timer stops, callers waiting get :class:`PoolClosed`."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("the database pool is closed"))

    def get_size(self) -> int:
        """Connections open, lent or being opened."""
        return self._open

    def get_idle_size(self) -> int:
        return len(self._idle)


async def _close(connection: Connection) -> None:
    try:
        await connection.close(timeout=CLOSE_SECONDS)
    except Exception:  # noqa: BLE001 - the connection is going either way
        connection.terminate()


class _Lent:
    """What :meth:`Pool.acquire` returns: an async context manager, or an awaitable."""

    __slots__ = ("_pool", "_slot", "_timeout")

    def __init__(self, pool: Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._slot: _Slot | None = None

    async def __aenter__(self) -> Connection:
        self._slot = await self._pool._lend(self._timeout)
        return self._slot.connection

    async def __aexit__(self, kind: type[BaseException] | None, failure: BaseException | None,
                        traceback: TracebackType | None) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            if failure is None:
                await self._pool._done_with(slot)
            else:
                await self._pool._give_back(slot, failure)

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._pool._lend_until_released(self._timeout).__await__()


# What the stores take: this pool, or asyncpg's (the command line's and the tests').
Queries: TypeAlias = "Pool | asyncpg.Pool[asyncpg.Record]"


async def create_pool(settings: StoreSettings, *, application_name: str,
                      session: Mapping[str, str] | None = None) -> Pool:
    """``session``: more settings of every connection's session (a value SQL must read, such
    as a trigger's, is passed this way, never formatted into a statement). No connection is
    opened here: the first statement opens one, so a service starts while its database is
    down."""
    dsn = settings.database_url.value
    server_settings = {**(session or {}), "application_name": application_name, "jit": "off"}

    def connect() -> Awaitable[Connection]:
        return asyncpg.connect(dsn, timeout=ACQUIRE_SECONDS, command_timeout=STATEMENT_SECONDS,
                               statement_cache_size=256, server_settings=server_settings)

    return Pool(connect, max_size=settings.db_pool_max,
                min_size=min(settings.db_pool_min, settings.db_pool_max))


async def ping(pool: Queries) -> None:
    """Raises when the database does not answer."""
    await pool.fetchval("SELECT 1", timeout=2.0)
