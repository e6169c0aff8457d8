"""The registry client cache: bounded, short-lived, and caching unknown clients briefly too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.authorize.clients import RegistryClients
from services.common.client_changes import ClientChangeFeed
from tests.authorize.conftest import App, register
from tests.conftest import listening
from tests.proxy import FaultProxy


class CountingRegistry:
    """The real registry stub, counting the GetClient calls that reach it."""

    def __init__(self, real: registry_pb2_grpc.ClientRegistryStub) -> None:
        self.real = real
        self.calls: list[str] = []

    async def _get_client(self, request: registry_pb2.GetClientRequest, **kwargs: Any) -> Any:
        self.calls.append(request.client_id)
        return await self.real.GetClient(request, **kwargs)  # type: ignore[misc]

    @property
    def GetClient(self) -> Any:  # noqa: N802 - the stub's method name
        return self._get_client


def clients(stub: CountingRegistry, changes: ClientChangeFeed, *, ttl: float = 5.0,
            size: int = 256) -> RegistryClients:
    return RegistryClients(cast("registry_pb2_grpc.ClientRegistryAsyncStub", stub),
                           ttl_seconds=ttl, max_entries=size, changes=changes)


async def test_a_client_is_fetched_once_per_period(registry: registry_pb2_grpc.ClientRegistryStub,
                                                   app: App,
                                                   client_changes: ClientChangeFeed) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, client_changes, ttl=0.2)
    first = await directory.get(client_id=app.client_id)
    second = await directory.get(client_id=app.client_id)
    assert first is not None and first.name == app.name and second == first
    assert stub.calls == [app.client_id]
    await asyncio.sleep(0.25)
    await directory.get(client_id=app.client_id)
    assert stub.calls == [app.client_id] * 2


async def test_an_unknown_client_is_cached_too(
        registry: registry_pb2_grpc.ClientRegistryStub, client_changes: ClientChangeFeed) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, client_changes)
    assert await directory.get(client_id="otesse_ci_unknown") is None
    assert await directory.get(client_id="otesse_ci_unknown") is None
    assert stub.calls == ["otesse_ci_unknown"]


async def test_absurd_ids_never_reach_the_registry(
        registry: registry_pb2_grpc.ClientRegistryStub, client_changes: ClientChangeFeed) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, client_changes)
    assert await directory.get(client_id="x" * 129) is None
    assert await directory.get(client_id="") is None
    assert stub.calls == []


async def test_the_cache_is_bounded_least_recently_used_first(
        registry: registry_pb2_grpc.ClientRegistryStub, app: App, public_app: App,
        client_changes: ClientChangeFeed) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, client_changes, size=2)
    for client_id in (app.client_id, public_app.client_id, app.client_id, "otesse_ci_third"):
        await directory.get(client_id=client_id)
    # public_app was the least recently used when the third entry arrived.
    await directory.get(client_id=app.client_id)
    await directory.get(client_id=public_app.client_id)
    assert stub.calls == [app.client_id, public_app.client_id, "otesse_ci_third",
                          public_app.client_id]


async def within(seconds: float, condition: Callable[[], Awaitable[bool]]) -> float:
    """How long until ``condition`` holds (polled); fails past ``seconds``."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < seconds, "the change was not seen in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


CHANGES: list[tuple[str, Callable[[Any, str], Awaitable[Any]],
                    Callable[[registry_pb2.Client | None], bool]]] = [
    ("a deleted client is gone",
     lambda stub, client_id: stub.DeleteClient(registry_pb2.DeleteClientRequest(
         client_id=client_id)),
     lambda found: found is None),
    ("a removed redirect URI is gone",
     lambda stub, client_id: stub.UpdateClient(registry_pb2.UpdateClientRequest(
         client_id=client_id, redirect_uris=["https://moved.example/cb"],
         update_mask=FieldMask(paths=["redirect_uris"]))),
     lambda found: found is not None and list(found.redirect_uris) == [
         "https://moved.example/cb"]),
]


@pytest.mark.parametrize(("change", "seen"), [case[1:] for case in CHANGES],
                         ids=[case[0] for case in CHANGES])
async def test_a_change_in_the_registry_is_seen_at_once(
        registry: registry_pb2_grpc.ClientRegistryStub, client_changes: ClientChangeFeed,
        change: Callable[[Any, str], Awaitable[Any]],
        seen: Callable[[registry_pb2.Client | None], bool]) -> None:
    app = await register(registry, name="Changing", redirect_uris=["https://old.example/cb"],
                         scopes=["bookings:read"])
    # An hour of cache: only the announcement can make the change visible in time.
    directory = clients(CountingRegistry(registry), client_changes, ttl=3600)
    assert await directory.get(client_id=app.client_id) is not None

    await change(registry, app.client_id)

    async def changed() -> bool:
        return seen(await directory.get(client_id=app.client_id))

    assert await within(2.0, changed) < 2.0


async def test_without_the_feed_the_cache_is_not_used_then_cleared_on_return(
        registry: registry_pb2_grpc.ClientRegistryStub, database_url: str) -> None:
    parts = urlsplit(database_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    feed = ClientChangeFeed(urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:"
                                                              f"{proxy.port}")),
                            application_name="otesse-test-cut-feed", check_seconds=0.2,
                            timeout=1.0)
    task = asyncio.create_task(feed.run())
    stub = CountingRegistry(registry)
    directory = clients(stub, feed, ttl=3600)
    app = await register(registry, name="Unheard", redirect_uris=["https://old.example/cb"],
                         scopes=["bookings:read"])
    try:
        await listening(feed)
        await directory.get(client_id=app.client_id)
        await proxy.cut()
        await within(5.0, lambda: _false(feed.connected))
        # Deleted while nobody listens: the announcement is lost, so nothing may be served
        # from memory.
        await cast(Any, registry).DeleteClient(
            registry_pb2.DeleteClientRequest(client_id=app.client_id))
        assert await directory.get(client_id=app.client_id) is None
        calls = len(stub.calls)
        await directory.get(client_id=app.client_id)
        assert len(stub.calls) == calls + 1
        await proxy.restore()
        await listening(feed)
        await directory.get(client_id=app.client_id)
        await directory.get(client_id=app.client_id)
        assert len(stub.calls) == calls + 2  # cached again once heard
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.cut()


async def _false(value: bool) -> bool:
    return not value
