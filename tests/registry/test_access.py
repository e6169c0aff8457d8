"""Attacks on client administration over gRPC: only the operator CLI and the authorize service
(the settings pages) may register, change, rotate or delete clients; reading a client and
checking a secret stay open to the services that meet clients (DESIGN §5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import service_auth
from services.common.grpc_client import create_channel
from tests.callers import DEV_KEY

Stub = Any
Call = Callable[[Stub, str, tuple[tuple[str, str], ...]], Any]

MUTATIONS: list[tuple[str, Call]] = [
    ("register", lambda stub, client_id, md: stub.RegisterClient(pb.RegisterClientRequest(
        name="Rogue", redirect_uris=["https://rogue.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="owner-1"), metadata=md)),
    ("update", lambda stub, client_id, md: stub.UpdateClient(pb.UpdateClientRequest(
        client_id=client_id, redirect_uris=["https://rogue.example/cb"],
        update_mask=FieldMask(paths=["redirect_uris"])), metadata=md)),
    ("rotate", lambda stub, client_id, md: stub.RotateClientSecret(
        pb.RotateClientSecretRequest(client_id=client_id, overlap_seconds=0), metadata=md)),
    ("delete", lambda stub, client_id, md: stub.DeleteClient(
        pb.DeleteClientRequest(client_id=client_id), metadata=md)),
]
CALLERS: list[tuple[str, str | None, str, grpc.StatusCode | None]] = [
    # (id, caller, audience, refusal or None)
    ("fails because no credential is sent", None, "registry", grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the token service may not", "token", "registry",
     grpc.StatusCode.PERMISSION_DENIED),
    ("fails because a resource server may not", "bookings", "registry",
     grpc.StatusCode.PERMISSION_DENIED),
    ("fails because the credential is for the token service", "cli", "token",
     grpc.StatusCode.UNAUTHENTICATED),
    ("the operator CLI may", "cli", "registry", None),
    ("the authorize service may", "authorize", "registry", None),
]


@pytest_asyncio.fixture
async def bare(registry_address: str) -> AsyncIterator[registry_pb2_grpc.ClientRegistryStub]:
    channel = create_channel(registry_address, services=("otesse.auth.v1.ClientRegistry",))
    yield registry_pb2_grpc.ClientRegistryStub(channel)
    await channel.close()


def metadata(caller: str | None, audience: str) -> tuple[tuple[str, str], ...]:
    if caller is None:
        return ()
    return ((service_auth.METADATA_KEY,
             service_auth.mint(DEV_KEY, caller=caller, audience=audience)),)


@pytest.mark.parametrize("mutation", [case[1] for case in MUTATIONS],
                         ids=[case[0] for case in MUTATIONS])
@pytest.mark.parametrize(("caller", "audience", "refusal"), [case[1:] for case in CALLERS],
                         ids=[case[0] for case in CALLERS])
async def test_only_the_cli_and_authorize_change_clients(
        registry: Stub, bare: Stub, mutation: Call, caller: str | None, audience: str,
        refusal: grpc.StatusCode | None) -> None:
    victim = await registry.RegisterClient(pb.RegisterClientRequest(
        name="Victim", redirect_uris=["https://victim.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="owner-1"))
    client_id = victim.client.client_id

    if refusal is None:
        await mutation(bare, client_id, metadata(caller, audience))
        return
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mutation(bare, client_id, metadata(caller, audience))
    assert refused.value.code() == refusal
    # The victim is untouched: same redirect URI, same secret.
    found = await bare.GetClient(pb.GetClientRequest(client_id=client_id))
    assert list(found.client.redirect_uris) == ["https://victim.example/cb"]
    await bare.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id=client_id, client_secret=victim.client_secret))


async def test_reading_clients_stays_open(registry: Stub, bare: Stub) -> None:
    created = await registry.RegisterClient(pb.RegisterClientRequest(
        name="Open", redirect_uris=["https://open.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="owner-open"))
    client_id = created.client.client_id
    assert (await bare.GetClient(pb.GetClientRequest(client_id=client_id))).client.name == "Open"
    assert (await bare.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id=client_id, client_secret=created.client_secret))).client.client_id == client_id
    listed = await bare.ListClients(pb.ListClientsRequest(owner_user_id="owner-open"))
    assert [client.client_id for client in listed.clients] == [client_id]
