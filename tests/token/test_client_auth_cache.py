"""The client-authentication cache never outlives a change of the client (README: a secret
rotated with ``--overlap-seconds 0`` stops "at once"): two token-service replicas, each with an
hour of cache, refuse a rotated-out or deleted secret as soon as the registry commits the
change; and while a replica cannot hear changes, it serves nothing from its cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio

from otesse.auth.v1 import registry_pb2 as pb
from services.common.settings import Secret, StoreSettings
from tests.conftest import listening
from tests.proxy import FaultProxy
from tests.token.conftest import Client, TokenService, make_settings, register_client, running

HOUR = 3600.0


async def authenticates(service: TokenService, client_id: str, secret: str) -> bool:
    """Whether the token endpoint accepts the client (a made-up code, so nothing is issued:
    invalid_grant means the client got through, invalid_client that it did not)."""
    response = await service.http.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": "made-up-code",
        "redirect_uri": "https://app.example.com/callback", "client_id": client_id,
        "client_secret": secret})
    error = response.json()["error"]
    assert error in ("invalid_grant", "invalid_client"), response.text
    return bool(error == "invalid_grant")


async def refused_within(seconds: float, services: list[TokenService], client_id: str,
                         secret: str) -> float:
    """How long until every replica refuses ``secret``; fails past ``seconds``."""
    started = time.monotonic()
    while True:
        verdicts = [await authenticates(service, client_id, secret) for service in services]
        elapsed = time.monotonic() - started
        if not any(verdicts):
            return elapsed
        assert elapsed < seconds, f"still accepted by {verdicts} after {elapsed:.2f} s"
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module")
async def replicas(store_settings: StoreSettings, registry_address: str,
                   ) -> AsyncIterator[list[TokenService]]:
    settings = make_settings(store_settings, registry_address, client_auth_cache_seconds=HOUR)
    async with running(settings) as first, running(settings) as second:
        for service in (first, second):
            await listening(service.client_changes)
        yield [first, second]


CHANGES: list[tuple[str, Callable[[Any, Client], Awaitable[Any]]]] = [
    ("rotated with no overlap", lambda registry, client: registry.RotateClientSecret(
        pb.RotateClientSecretRequest(client_id=client.client_id, overlap_seconds=0))),
    ("deleted", lambda registry, client: registry.DeleteClient(
        pb.DeleteClientRequest(client_id=client.client_id))),
]


@pytest.mark.parametrize("change", [case[1] for case in CHANGES],
                         ids=[case[0] for case in CHANGES])
async def test_every_replica_refuses_the_old_secret_at_once(
        replicas: list[TokenService], registry: Any,
        change: Callable[[Any, Client], Awaitable[Any]]) -> None:
    client = await register_client(registry)
    # Both replicas now remember the secret for an hour.
    for service in replicas:
        assert await authenticates(service, client.client_id, client.secret)

    await change(registry, client)

    assert await refused_within(2.0, replicas, client.client_id, client.secret) < 2.0


async def test_the_new_secret_works_everywhere_after_rotation(
        replicas: list[TokenService], registry: Any) -> None:
    client = await register_client(registry)
    for service in replicas:
        assert await authenticates(service, client.client_id, client.secret)
    rotated = await registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=client.client_id, overlap_seconds=0))
    await refused_within(2.0, replicas, client.client_id, client.secret)
    for service in replicas:
        assert await authenticates(service, client.client_id, rotated.client_secret)


async def test_while_changes_cannot_be_heard_nothing_is_served_from_memory(
        store_settings: StoreSettings, registry_address: str, registry: Any) -> None:
    parts = urlsplit(store_settings.database_url.value)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    through = urlunsplit(parts._replace(
        netloc=f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username
        else f"127.0.0.1:{proxy.port}"))
    settings = make_settings(replace(store_settings, database_url=Secret(through)),
                             registry_address, client_auth_cache_seconds=HOUR)
    client = await register_client(registry)
    try:
        async with running(settings) as service:
            await listening(service.client_changes)
            assert await authenticates(service, client.client_id, client.secret)
            await proxy.cut()
            deadline = time.monotonic() + 10
            while service.client_changes.connected:
                assert time.monotonic() < deadline, "the lost feed was never noticed"
                await asyncio.sleep(0.01)
            # Rotated while this replica cannot hear it: the announcement is lost for it.
            rotated = await registry.RotateClientSecret(pb.RotateClientSecretRequest(
                client_id=client.client_id, overlap_seconds=0))

            assert not await authenticates(service, client.client_id, client.secret)

            await proxy.restore()
            await listening(service.client_changes)
            assert not await authenticates(service, client.client_id, client.secret)
            assert await authenticates(service, client.client_id, rotated.client_secret)
    finally:
        await proxy.cut()
