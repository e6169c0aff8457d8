"""The revocation feed of one token replica: the log's live tail, fanned out to the
``WatchRevocations`` subscribers connected to this replica.

Postgres is the source of truth (:mod:`services.token.revocation_log`); this is only how its
new rows travel. Each replica keeps one dedicated connection that ``LISTEN``s on
:data:`CHANNEL` (the log's trigger notifies it as each revoking transaction commits, whichever
replica made it) and reads the tail after the last row it read; it also reads every
``poll_seconds`` whatever it heard, since a notification sent while it was reconnecting is
lost. Each read's rows go to every subscriber at once: the cost of a subscriber is a list
append per revocation and a heartbeat a second, not a query.

Bounded: at most ``max_subscribers`` at once (the next is refused), and each holds at most
``queue_limit`` revocations it has not yet taken; a subscriber that falls further behind is cut
off, and resumes from its cursor like any subscriber that reconnects, rather than making this
replica buffer without bound.

Fresh: :attr:`RevocationFeed.fresh` is true only while reads of the log succeed. Heartbeats are
sent only then, so a subscriber of a replica that cannot read Postgres stops hearing from it
and fails closed, rather than being told it is current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

import asyncpg

from services.token.metrics import FEED_CUT, FEED_SUBSCRIBERS
from services.token.revocation_log import TAIL_BATCH, RevocationLog
from services.token.revocations import LoggedRevocation

log = logging.getLogger("otesse.token.revocation_feed")

# The channel of the log's trigger (migration 0003).
CHANNEL = "otesse_revocations"


class TooManySubscribers(Exception):
    """This replica serves as many subscribers as it may."""


class FeedNotReady(Exception):
    """The feed has not read the log yet (start-up, or Postgres unreachable since)."""


class Subscription:
    """What one subscriber has not taken yet, bounded."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending: deque[LoggedRevocation] = deque()
        self._wake = asyncio.Event()
        # Fell more than ``limit`` behind: the stream ends and the subscriber resumes.
        self.cut = False

    def offer(self, revocations: Sequence[LoggedRevocation]) -> None:
        if self.cut:
            return
        if len(self._pending) + len(revocations) > self._limit:
            FEED_CUT.labels("slow").inc()
            self.end()
        else:
            self._pending.extend(revocations)
            self._wake.set()

    def end(self) -> None:
        self.cut = True
        self._pending.clear()
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._pending

    async def take(self, timeout: float) -> list[LoggedRevocation]:
        """Everything pending, waiting up to ``timeout`` for something (empty: nothing)."""
        if not self._pending and not self.cut:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()
        taken = list(self._pending)
        self._pending.clear()
        return taken


class RevocationFeed:
    def __init__(self, dsn: str, log_reader: RevocationLog, *, application_name: str,
                 max_subscribers: int, queue_limit: int = 10_000, poll_seconds: float = 1.0,
                 connect_timeout: float = 2.0) -> None:
        self._dsn = dsn
        self._log = log_reader
        self._application_name = application_name
        self._max_subscribers = max_subscribers
        self._queue_limit = queue_limit
        self._poll_seconds = poll_seconds
        self._connect_timeout = connect_timeout
        self._subscribers: set[Subscription] = set()
        self._wake = asyncio.Event()
        # The highest cursor read and fanned out; None until the first read.
        self._head: int | None = None
        self._read_at = float("-inf")
        self._failing = False

    @property
    def head(self) -> int | None:
        return self._head

    @property
    def fresh(self) -> bool:
        """True while the log is being read (the last read succeeded within two polls)."""
        return time.monotonic() - self._read_at <= 2 * self._poll_seconds + 0.5

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A subscription that receives every row read from now on (register it *before*
        catching up from the log, so nothing falls between the two); end it with
        :meth:`unsubscribe`."""
        if self._head is None or not self.fresh:
            raise FeedNotReady()
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers()
        subscription = Subscription(self._queue_limit)
        self._subscribers.add(subscription)
        FEED_SUBSCRIBERS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.discard(subscription)
            FEED_SUBSCRIBERS.dec()

    def end_all(self) -> None:
        """Ends every subscription (a stopping replica): each subscriber resumes from its
        cursor on another replica at once, rather than holding the stop for its grace."""
        for subscription in self._subscribers:
            if not subscription.cut:
                FEED_CUT.labels("stopping").inc()
            subscription.end()

    async def run(self) -> None:
        """Reads the log until cancelled: at each notification, and every poll."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                try:
                    await self._read()
                    self._failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - read again at the next poll
                    if not self._failing:
                        log.warning("revocation log unreadable; subscribers hear no heartbeat "
                                    "until it is", extra={"error": type(exc).__name__})
                    self._failing = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _read(self) -> None:
        if self._head is None:
            # Subscribers catch up from the log themselves: the feed starts at its head.
            self._head = await self._log.head()
        while True:
            rows = await self._log.tail(self._head)
            if rows:
                for subscription in self._subscribers:
                    subscription.offer(rows)
                self._head = rows[-1].cursor
            if len(rows) < TAIL_BATCH:
                break
        self._read_at = time.monotonic()

    def _notified(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """Keeps one connection listening; each (re)connection also wakes a read."""
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001, S110 - the poll covers the gap; reconnect
                pass
            await asyncio.sleep(self._poll_seconds / 2)

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout,
            server_settings={"application_name": self._application_name})
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, self._notified)
            self._wake.set()
            # A closed connection is seen at once; a silent one by the periodic check.
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds * 5):
                        await lost.wait()
                if not lost.is_set():
                    await connection.fetchval("SELECT 1", timeout=self._connect_timeout)
        finally:
            with contextlib.suppress(Exception):
                connection.terminate()
