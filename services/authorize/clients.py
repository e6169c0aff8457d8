"""The OAuth clients, read from the registry over gRPC (RFC 6749 §2) with a small cache.

Every authorization request needs its client, so lookups are cached in-process for a few
seconds, bounded in size (least recently used out first). An unknown client is cached briefly
too, so a flood of requests for made-up ids costs the registry one call per id per period. A
registry that is down raises (the page says 503) and nothing is cached, so service resumes as
soon as the registry answers again.

A cached client never outlives a change of it: the registry announces every update (redirect
URIs among them) and deletion (:mod:`services.common.client_changes`), and the entry goes as
the change commits. While the announcements cannot be heard, the cache is not used at all.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import grpc
from grpc import aio

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["ClientRegistry"].full_name
_DEADLINE_SECONDS = 3.0
_MAX_CLIENT_ID = 128


class ClientDirectory(Protocol):
    async def get(self, *, client_id: str) -> registry_pb2.Client | None: ...

    async def get_with_logo(self, *, client_id: str) -> registry_pb2.Client | None: ...


class ClientChanges(Protocol):
    """Announcements of changed clients (a ``services.common.client_changes.ClientChangeFeed``)."""

    @property
    def connected(self) -> bool: ...

    def subscribe(self, subscriber: Callable[[str | None], None]) -> None: ...


class RegistryClients:
    """:class:`ClientDirectory` over the registry's ``GetClient``."""

    def __init__(self, stub: registry_pb2_grpc.ClientRegistryAsyncStub, *, ttl_seconds: float,
                 max_entries: int, changes: ClientChanges) -> None:
        self._stub = stub
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, registry_pb2.Client | None]] = OrderedDict()
        self._changes = changes
        # Counts what was forgotten: an answer asked for before a change is not kept.
        self._generation = 0
        changes.subscribe(self._forget)

    def _forget(self, client_id: str | None) -> None:
        self._generation += 1
        if client_id is None:
            self._entries.clear()
        else:
            self._entries.pop(client_id, None)

    async def get(self, *, client_id: str) -> registry_pb2.Client | None:
        if not client_id or len(client_id) > _MAX_CLIENT_ID:
            return None
        now = time.monotonic()
        entry = self._entries.get(client_id) if self._changes.connected else None
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(client_id)
            return entry[1]
        generation = self._generation
        client = await self._fetch(client_id, include_logo=False)
        if generation != self._generation or not self._changes.connected:
            return client
        self._entries[client_id] = (now + self._ttl, client)
        self._entries.move_to_end(client_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return client

    async def get_with_logo(self, *, client_id: str) -> registry_pb2.Client | None:
        """Not cached: logos are large, rarely fetched, and cached by browsers via ETag."""
        if not client_id or len(client_id) > _MAX_CLIENT_ID:
            return None
        return await self._fetch(client_id, include_logo=True)

    async def _fetch(self, client_id: str, *, include_logo: bool) -> registry_pb2.Client | None:
        try:
            response = await self._stub.GetClient(
                registry_pb2.GetClientRequest(client_id=client_id, include_logo=include_logo),
                timeout=_DEADLINE_SECONDS)
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        return response.client
