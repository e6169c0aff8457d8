"""Client change events, so that every replica's client caches forget a changed client at once.

The registry announces every change of a client — a secret rotated, redirect URIs or scopes
updated, the client deleted — with ``pg_notify(CHANNEL, client_id)`` inside the very statement
that makes the change: Postgres delivers it exactly when the change commits, to every
connection listening at that moment. The token service (its client-authentication cache) and
the authorize service (its client cache) each keep one :class:`ClientChangeFeed`: a dedicated
connection that ``LISTEN``s and passes each changed client id to its subscribers.

Fail safe: a cache may serve an entry only while :attr:`ClientChangeFeed.connected` is true.
The feed is connected from the moment ``LISTEN`` holds until the connection is seen to drop
(at once when it closes, within ``check_seconds`` + ``timeout`` when it goes silent); while it
is not, caches are bypassed. Each (re)connection tells subscribers to forget everything
(``None``), since changes made while nobody listened were never heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("otesse.client_changes")

# The one channel of the contract between the registry and the client caches.
CHANNEL = "otesse_registry_client_changes"

# A changed client's id, or None for "forget every client".
Subscriber = Callable[[str | None], None]


class ClientChangeFeed:
    def __init__(self, dsn: str, *, application_name: str, check_seconds: float = 1.0,
                 timeout: float = 2.0, retry_seconds: float = 0.5) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._check_seconds = check_seconds
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._subscribers: list[Subscriber] = []
        self._connected = False
        self._lost = asyncio.Event()
        # Logged once per outage, not at every retry.
        self._failing = False

    @property
    def connected(self) -> bool:
        """True only while changes are being heard: caches may serve entries."""
        return self._connected

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _publish(self, client_id: str | None) -> None:
        for subscriber in self._subscribers:
            subscriber(client_id)

    def _on_notification(self, connection: object, pid: int, channel: str,
                         payload: object) -> None:
        if isinstance(payload, str) and payload:
            self._publish(payload)

    def _on_termination(self, connection: object) -> None:
        self._disconnected()

    def _disconnected(self) -> None:
        if self._connected:
            log.warning("client change feed lost: client caches bypassed until it returns")
        self._connected = False
        self._lost.set()

    async def run(self) -> None:
        """Listens until cancelled, reconnecting whenever the connection drops."""
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=self._timeout,
                    server_settings={"application_name": self._application_name})
                connection.add_termination_listener(self._on_termination)
                await connection.add_listener(CHANNEL, self._on_notification)
                self._lost.clear()
                # Whatever changed while nobody listened was never heard: forget it all.
                self._publish(None)
                self._connected = True
                self._failing = False
                log.info("client change feed listening")
                await self._watch(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: bypass caches, retry
                if not self._failing:
                    log.warning("client change feed unavailable; retrying", extra={
                        "error": type(exc).__name__})
                self._failing = True
            finally:
                self._disconnected()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.terminate()
            await asyncio.sleep(self._retry_seconds)

    async def _watch(self, connection: asyncpg.Connection) -> None:
        # A closed connection is seen at once (the termination listener); a silent one (a
        # network partition) by the periodic check.
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._check_seconds)
            if not self._lost.is_set():
                await connection.fetchval("SELECT 1", timeout=self._timeout)
