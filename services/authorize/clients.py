"""The OAuth clients, read from the registry over gRPC (RFC 6749 §2) with a small cache.

Every authorization request needs its client, so lookups are cached in-process for a few
seconds, bounded in size (least recently used out first). An unknown client is cached briefly
too, so a flood of requests for made-up ids costs the registry one call per id per period. A
registry that is down raises (the page says 503) and nothing is cached, so service resumes as
soon as the registry answers again.

A cached client never outlives a change of it: the registry announces every update (redirect
URIs among them) and deletion (:mod:`services.common.client_changes`), and the entry goes as
the change commits. While the announcements cannot be heard, the cache is not used at all
(:mod:`services.common.client_cache` keeps these promises, for the token service too).
"""

from __future__ import annotations

from typing import Protocol

import grpc
from grpc import aio

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.common.client_cache import ClientCache, ClientChanges

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["ClientRegistry"].full_name
_DEADLINE_SECONDS = 3.0
_MAX_CLIENT_ID = 128


class ClientDirectory(Protocol):
    async def get(self, *, client_id: str) -> registry_pb2.Client | None: ...

    async def get_with_logo(self, *, client_id: str) -> registry_pb2.Client | None: ...


class RegistryClients:
    """:class:`ClientDirectory` over the registry's ``GetClient``."""

    def __init__(self, stub: registry_pb2_grpc.ClientRegistryAsyncStub, *, ttl_seconds: float,
                 max_entries: int, changes: ClientChanges) -> None:
        self._stub = stub
        self._cache: ClientCache[registry_pb2.Client | None] = ClientCache(
            changes, ttl_seconds=ttl_seconds, max_entries=max_entries)

    async def get(self, *, client_id: str) -> registry_pb2.Client | None:
        if not client_id or len(client_id) > _MAX_CLIENT_ID:
            return None
        remembered = self._cache.get(client_id)
        if remembered is not None:
            return remembered[0]
        ticket = self._cache.ticket()
        client = await self._fetch(client_id, include_logo=False)
        self._cache.put(client_id, client, ticket=ticket)
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
