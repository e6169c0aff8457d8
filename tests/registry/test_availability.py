"""The registry with its database down answers UNAVAILABLE, and serves again by itself."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import db
from services.common.grpc_client import create_channel
from services.common.settings import Env, Secret, StoreSettings
from services.registry.app import create_server
from services.registry.settings import RegistrySettings
from tests.callers import as_service
from tests.proxy import FaultProxy


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_database_outage_is_unavailable_then_recovers(store_settings: StoreSettings) -> None:
    parts = urlsplit(store_settings.database_url.value)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    stores = replace(store_settings,
                     database_url=Secret(through(store_settings.database_url.value, proxy.port)))
    settings = replace(RegistrySettings.from_env(Env({})), stores=stores)
    pool = await db.create_pool(stores, application_name="registry-outage-test")
    server = create_server(settings, pool, port=0)
    await server.start()
    channel = create_channel(f"127.0.0.1:{server.port}",
                             services=("otesse.auth.v1.ClientRegistry",),
                             interceptors=as_service("cli", "registry"))
    stub = registry_pb2_grpc.ClientRegistryStub(channel)
    request = pb.RegisterClientRequest(
        name="Outage", redirect_uris=["https://outage.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="outage")
    try:
        created = await stub.RegisterClient(request, timeout=5)
        await proxy.cut()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetClient(pb.GetClientRequest(client_id=created.client.client_id),
                                 timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "password" not in (info.value.details() or "")
        await proxy.restore()
        # No restart: the pool reconnects on the next call.
        for _ in range(50):
            try:
                again = await stub.GetClient(
                    pb.GetClientRequest(client_id=created.client.client_id), timeout=5)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the registry did not recover after the database returned")
        assert again.client.name == "Outage"
    finally:
        await channel.close()
        await server.stop(grace=1.0)
        await pool.close()
        await proxy.cut()


async def test_health_service_reports_serving(registry_address: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(registry_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "otesse.auth.v1.ClientRegistry"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
