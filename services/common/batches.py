"""Requests that arrive together share one statement: one round trip (and for a write, one
commit) for several, with no wait added to any of them.

A code exchange and a refresh are each one statement and one durable commit; a consented
authorization, one read. Postgres spends most of such a statement on what every statement pays
whatever its size — reading the message, starting the executor and opening the tables' indexes,
committing and flushing the WAL for a write, the context switches around each — and little on
each row. Measured on a 2-core machine (bench/README.md, "requests that arrive together share a
statement"), the backends spent about 320 µs per exchange at one statement each and 133 µs at
four to five per statement.

:class:`Batches` is natural batching: at most ``max_in_flight`` batches of one kind run at a
time. A request that finds a place free starts at once, alone (so a quiet service runs exactly
as before, with no delay); one that arrives while every place is taken waits for the next, and
then goes with every other that waited meanwhile, up to ``max_size``. The busier the service,
the larger its batches, and the fewer statements per request.

Each request still gets its own answer or its own error: the batch's runner returns one outcome
per request. A waiter that goes away before its batch starts is dropped from it; once a batch
has started it runs to its end (it is also the other requests' statement), and an outcome no one
waits for any more is dropped.

Waiting is bounded as waiting for a pooled connection is (:data:`services.common.db.
ACQUIRE_SECONDS`): a request whose batch has not started within ``max_wait`` seconds (a database
that has stopped answering, with requests piling up behind its statements) leaves the queue with
a :class:`TimeoutError`, which callers answer 503 like any store that cannot be reached. Once
started, a batch is bounded by its statement's own timeout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
from prometheus_client import Histogram

from services.common.unavailable import is_unavailable

T = TypeVar("T")
R = TypeVar("R")

BATCH_SIZE = Histogram(
    "otesse_store_batch_size",
    "Requests served by one statement, by kind (exchange, refresh: the token service's writes; "
    "standing: the authorize service's consent reads).",
    ["kind"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))

Runner = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
# As long as a request may wait for a pooled connection (services.common.db.ACQUIRE_SECONDS).
MAX_WAIT_SECONDS = 1.0


class Batches(Generic[T, R]):
    """Runs requests of one kind in batches; ``run`` takes the requests of one batch and
    returns, in the same order, each one's result or the exception to raise to its caller (an
    exception ``run`` raises is every caller's)."""

    def __init__(self, run: Runner[T, R], *, kind: str, max_in_flight: int,
                 max_size: int, max_wait: float = MAX_WAIT_SECONDS) -> None:
        if max_in_flight < 1 or max_size < 1 or max_wait <= 0:
            raise ValueError("max_in_flight and max_size must be at least 1, max_wait above 0")
        self._run = run
        self._max_in_flight = max_in_flight
        self._max_size = max_size
        self._max_wait = max_wait
        self._sizes = BATCH_SIZE.labels(kind)
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        # The outcomes of the requests in ``_waiting`` that have not started.
        self._queued: set[asyncio.Future[R]] = set()
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """``item`` served (with whichever others are waiting); its result, or its error."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, outcome))
        self._queued.add(outcome)
        if len(self._running) < self._max_in_flight:
            self._start()
        if outcome not in self._queued:
            # Started at once (the common case): bounded by its statement alone.
            return await outcome
        expiry = loop.call_later(self._max_wait, self._expire, outcome)
        try:
            # A caller cancelled here cancels ``outcome``: a batch not yet started skips it.
            return await outcome
        finally:
            expiry.cancel()

    async def wait_idle(self) -> None:
        """Returns once no batch is running or waiting (before the pool they use closes)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _expire(self, outcome: asyncio.Future[R]) -> None:
        # Only a request still queued: a started batch settles its own requests' outcomes.
        if outcome in self._queued and not outcome.done():
            self._queued.discard(outcome)
            outcome.set_exception(TimeoutError(
                f"no place for this request's statement within {self._max_wait} s"))

    def _start(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._waiting and len(batch) < self._max_size:
            entry = self._waiting.popleft()
            self._queued.discard(entry[1])
            if not entry[1].done():
                batch.append(entry)
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._running.add(task)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._sizes.observe(len(batch))
        try:
            try:
                outcomes = await self._run([item for item, _ in batch])
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests gave "
                                       f"{len(outcomes)} outcomes")
            except asyncio.CancelledError:
                for _, outcome in batch:
                    outcome.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every caller learns it
                for _, outcome in batch:
                    if not outcome.done():
                        outcome.set_exception(exc)
                return
            for (_, outcome), result in zip(batch, outcomes, strict=True):
                if outcome.done():
                    continue
                if isinstance(result, BaseException):
                    outcome.set_exception(result)
                else:
                    outcome.set_result(result)
        finally:
            task = asyncio.current_task()
            assert task is not None
            self._running.discard(task)
            # The requests that waited meanwhile go now, together.
            while self._waiting and len(self._running) < self._max_in_flight:
                self._start()


async def shared_or_alone(items: Sequence[T], *,
                          shared: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
                          alone: Callable[[T], Awaitable[R]]) -> Sequence[R | Exception]:
    """A batch's runner of statements: one request alone as it always went (``alone``);
    several in the shared statement (``shared``). If Postgres refuses that statement for
    anything but an outage (a deadlock, a request it cannot take), each request is run again
    alone, so the one that broke it fails alone; an outage is every request's."""
    if len(items) == 1:
        return [await alone(items[0])]
    try:
        return await shared(items)
    except asyncpg.PostgresError as exc:
        if is_unavailable(exc):
            raise
    outcomes: list[R | Exception] = []
    for item in items:
        try:
            outcomes.append(await alone(item))
        except Exception as exc:  # noqa: BLE001 - its caller gets it, the others their own
            outcomes.append(exc)
    return outcomes
