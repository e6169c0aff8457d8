"""The registry's audit events over real gRPC: every change of a client is recorded by the
statement that makes it, as the operator's when the CLI calls (at its address, with its
request id), whatever user the call claims to act for; a change that does not happen records
nothing. (The authorize service acting for a user: tests/authorize/test_audit_events.py.)"""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from tests.audit_rows import of_request


def call(request_id: str) -> dict[str, Any]:
    # The CLI's channel (tests/conftest.py), claiming to act for a user it may not speak for.
    return {"metadata": (("x-request-id", request_id), ("x-otesse-on-behalf-of", "victim"),
                         ("x-otesse-client-ip", "198.51.100.9")), "timeout": 5}


def fresh_request_id() -> str:
    return "audit-" + secrets.token_hex(8)


async def test_every_change_of_a_client_is_the_operators(
        registry: registry_pb2_grpc.ClientRegistryAsyncStub, pool: asyncpg.Pool) -> None:
    registered, updated, rotated, deleted = (fresh_request_id() for _ in range(4))
    created = await registry.RegisterClient(pb.RegisterClientRequest(
        name="Operator App", redirect_uris=["https://ops.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="owner-ops"), **call(registered))
    client_id = created.client.client_id
    await registry.UpdateClient(pb.UpdateClientRequest(
        client_id=client_id, name="Renamed", update_mask=FieldMask(paths=["name"])),
        **call(updated))
    await registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=client_id, overlap_seconds=60), **call(rotated))
    await registry.DeleteClient(pb.DeleteClientRequest(client_id=client_id), **call(deleted))

    recorded = []
    for rid in (registered, updated, rotated, deleted):
        (row,) = await of_request(pool, rid)
        assert (row["actor_kind"], row["actor_id"], row["subject_user_id"],
                row["client_id"], row["client_ip"]) == (
            "operator", "operator", "owner-ops", client_id, "127.0.0.1")
        recorded.append((row["event_type"], json.loads(row["details"])))
    assert recorded == [("client.registered", {"client_type": "confidential"}),
                        ("client.updated", {"fields": ["name"]}),
                        ("client.secret_rotated", {"overlap_seconds": 60}),
                        ("client.deleted", {})]
    # The secret is nowhere in the trail, not even hashed.
    assert await pool.fetchval("SELECT count(*) FROM audit.events e"
                               " WHERE strpos(e::text, $1) > 0", created.client_secret) == 0


async def test_a_change_that_does_not_happen_records_nothing(
        registry: registry_pb2_grpc.ClientRegistryAsyncStub, pool: asyncpg.Pool) -> None:
    rid = fresh_request_id()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.DeleteClient(pb.DeleteClientRequest(
            client_id="otesse_ci_" + secrets.token_hex(8)), **call(rid))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    public = await registry.RegisterClient(pb.RegisterClientRequest(
        name="Public App", redirect_uris=["https://ops.example/cb"],
        allowed_scopes=["bookings:read"], owner_user_id="owner-ops",
        client_type=pb.CLIENT_TYPE_PUBLIC))
    with pytest.raises(grpc.aio.AioRpcError) as no_secret:
        await registry.RotateClientSecret(pb.RotateClientSecretRequest(
            client_id=public.client.client_id), **call(rid))
    assert no_secret.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await of_request(pool, rid) == []
