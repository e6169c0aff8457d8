"""The registry client cache: bounded, short-lived, and caching unknown clients briefly too."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.authorize.clients import RegistryClients
from tests.authorize.conftest import App


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


def clients(stub: CountingRegistry, *, ttl: float = 5.0, size: int = 256) -> RegistryClients:
    return RegistryClients(cast("registry_pb2_grpc.ClientRegistryAsyncStub", stub),
                           ttl_seconds=ttl, max_entries=size)


async def test_a_client_is_fetched_once_per_period(registry: registry_pb2_grpc.ClientRegistryStub,
                                                   app: App) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, ttl=0.2)
    first = await directory.get(client_id=app.client_id)
    second = await directory.get(client_id=app.client_id)
    assert first is not None and first.name == app.name and second == first
    assert stub.calls == [app.client_id]
    await asyncio.sleep(0.25)
    await directory.get(client_id=app.client_id)
    assert stub.calls == [app.client_id] * 2


async def test_an_unknown_client_is_cached_too(
        registry: registry_pb2_grpc.ClientRegistryStub) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub)
    assert await directory.get(client_id="otesse_ci_unknown") is None
    assert await directory.get(client_id="otesse_ci_unknown") is None
    assert stub.calls == ["otesse_ci_unknown"]


async def test_absurd_ids_never_reach_the_registry(
        registry: registry_pb2_grpc.ClientRegistryStub) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub)
    assert await directory.get(client_id="x" * 129) is None
    assert await directory.get(client_id="") is None
    assert stub.calls == []


async def test_the_cache_is_bounded_least_recently_used_first(
        registry: registry_pb2_grpc.ClientRegistryStub, app: App, public_app: App) -> None:
    stub = CountingRegistry(registry)
    directory = clients(stub, size=2)
    for client_id in (app.client_id, public_app.client_id, app.client_id, "otesse_ci_third"):
        await directory.get(client_id=client_id)
    # public_app was the least recently used when the third entry arrived.
    await directory.get(client_id=app.client_id)
    await directory.get(client_id=public_app.client_id)
    assert stub.calls == [app.client_id, public_app.client_id, "otesse_ci_third",
                          public_app.client_id]
