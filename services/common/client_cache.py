"""What a service remembers of the registry's answers about clients, never past a change.

The authorize service remembers clients (for the authorization endpoint), the token service
successful client authentications (keyed also by the secret's hash). Both keep the same
promise, kept here once:

* an answer is served for ``ttl_seconds`` at most, and at most ``max_entries`` are kept (the
  least recently used go first);
* a change of a client, announced by the registry (:mod:`services.common.client_changes`),
  forgets every answer about it as the change commits; a reconnection of the feed forgets all;
* while the announcements cannot be heard, nothing is served or remembered;
* an answer asked for before a change is never remembered after it: the caller takes a
  :meth:`ClientCache.ticket` before asking the registry and hands it to :meth:`ClientCache.put`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class ClientChanges(Protocol):
    """Announcements of changed clients (a ``services.common.client_changes.ClientChangeFeed``)."""

    @property
    def connected(self) -> bool: ...

    def subscribe(self, subscriber: Callable[[str | None], None]) -> None: ...


class ClientCache(Generic[V]):
    """Answers about clients by ``(client id, key)``; ``key`` tells answers about one client
    apart (the token service's secret hash), ``b""`` when there is one answer per client."""

    def __init__(self, changes: ClientChanges, *, ttl_seconds: float, max_entries: int) -> None:
        self._changes = changes
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, V]] = OrderedDict()
        # Counts what was forgotten: an answer asked for before a change is not kept.
        self._generation = 0
        changes.subscribe(self._forget)

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, client_id: str | None) -> None:
        self._generation += 1
        if client_id is None:
            self._entries.clear()
            return
        for entry in [entry for entry in self._entries if entry[0] == client_id]:
            del self._entries[entry]

    def get(self, client_id: str, key: bytes = b"") -> tuple[V] | None:
        """``(answer,)`` when one is remembered (the answer itself may be ``None``: an unknown
        client), else ``None``."""
        if not self._changes.connected:
            return None
        entry = self._entries.get((client_id, key))
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[(client_id, key)]
            return None
        self._entries.move_to_end((client_id, key))
        return (entry[1],)

    def ticket(self) -> int:
        """Taken before asking the registry; :meth:`put` keeps the answer only if no change
        was announced since."""
        return self._generation

    def put(self, client_id: str, value: V, *, ticket: int, key: bytes = b"") -> None:
        if self._ttl <= 0 or not self._changes.connected or ticket != self._generation:
            return
        self._entries[(client_id, key)] = (time.monotonic() + self._ttl, value)
        self._entries.move_to_end((client_id, key))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
