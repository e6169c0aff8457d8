"""ClientRegistry over a real gRPC channel and real Postgres: every RPC and every refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common import credentials
from tests.images import image_bytes

if TYPE_CHECKING:
    Stub = registry_pb2_grpc.ClientRegistryAsyncStub


def register_request(**overrides: Any) -> pb.RegisterClientRequest:
    fields: dict[str, Any] = {
        "name": "Acme Scheduler",
        "description": "Syncs your bookings to Acme.",
        "redirect_uris": ["https://acme.example/callback"],
        "allowed_scopes": ["bookings:read", "customers:read"],
        "client_type": pb.CLIENT_TYPE_CONFIDENTIAL,
        "owner_user_id": "owner-1",
    }
    fields.update(overrides)
    return pb.RegisterClientRequest(**fields)


async def expect_status(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value.details() or ""


async def test_register_returns_client_and_secret_once(registry: Stub) -> None:
    response = await registry.RegisterClient(register_request())
    client = response.client
    assert client.client_id.startswith("otesse_ci_")
    assert credentials.is_well_formed(response.client_secret, "otesse_cs_")
    assert client.name == "Acme Scheduler"
    assert list(client.redirect_uris) == ["https://acme.example/callback"]
    assert list(client.allowed_scopes) == ["bookings:read", "customers:read"]
    assert client.client_type == pb.CLIENT_TYPE_CONFIDENTIAL
    assert client.HasField("secret_issued_at")
    fetched = await registry.GetClient(pb.GetClientRequest(client_id=client.client_id))
    # The secret is never returned again, and no field of the client carries it.
    assert response.client_secret not in str(fetched)
    assert fetched.client == client


async def test_public_client_has_no_secret(registry: Stub) -> None:
    response = await registry.RegisterClient(register_request(client_type=pb.CLIENT_TYPE_PUBLIC))
    assert response.client_secret == ""
    assert response.client.client_type == pb.CLIENT_TYPE_PUBLIC
    assert not response.client.HasField("secret_issued_at")
    await expect_status(registry.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id=response.client.client_id, client_secret="")), grpc.StatusCode.UNAUTHENTICATED)
    await expect_status(registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=response.client.client_id)), grpc.StatusCode.FAILED_PRECONDITION)


async def test_the_secret_is_stored_only_as_a_hash(registry: Stub, pool: Any) -> None:
    response = await registry.RegisterClient(register_request())
    row = await pool.fetchrow("SELECT * FROM registry.clients WHERE client_id = $1",
                              response.client.client_id)
    assert row["secret_hash"] == credentials.sha256(response.client_secret)
    assert response.client_secret.encode() not in b"".join(
        value if isinstance(value, bytes) else str(value).encode() for value in row.values())


LONG = "x" * 101


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": LONG}, "name"),
    ({"name": "Bad\x00name"}, "name"),
    ({"description": "d" * 1001}, "description"),
    ({"redirect_uris": []}, "redirect_uris"),
    ({"redirect_uris": ["/callback"]}, "redirect_uris"),
    ({"redirect_uris": ["acme.example/callback"]}, "redirect_uris"),
    ({"redirect_uris": ["https://acme.example/cb#frag"]}, "redirect_uris"),
    ({"redirect_uris": ["http://acme.example/callback"]}, "redirect_uris"),
    ({"redirect_uris": ["https://user@acme.example/callback"]}, "redirect_uris"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris"),
    ({"redirect_uris": ["https://acme.example/a b"]}, "redirect_uris"),
    ({"redirect_uris": ["https://acme.example:99999/cb"]}, "redirect_uris"),
    ({"redirect_uris": ["https://acmé.example/cb"]}, "redirect_uris"),
    ({"redirect_uris": ["https://acme.example/" + "a" * 2000]}, "redirect_uris"),
    ({"redirect_uris": [f"https://acme.example/{i}" for i in range(11)]}, "redirect_uris"),
    ({"allowed_scopes": []}, "allowed_scopes"),
    ({"allowed_scopes": ["bookings:read", "admin"]}, "allowed_scopes"),
    ({"owner_user_id": ""}, "owner_user_id"),
    ({"client_type": 7}, "client_type"),
    ({"logo": pb.Logo(data=b"<svg onload=alert(1)></svg>")}, "logo"),
    ({"logo": pb.Logo(data=b"\x89PNG\r\n\x1a\n<html>not really</html>")}, "logo"),
    ({"logo": pb.Logo(data=image_bytes("GIF"))}, "logo"),
    ({"logo": pb.Logo(data=image_bytes("PNG", size=(4000, 20)))}, "logo"),
    ({"logo": pb.Logo(data=image_bytes("PNG", size=(8, 8)))}, "logo"),
    ({"logo": pb.Logo(data=b"\x00" * (1024 * 1024 + 1))}, "logo"),
], ids=[
    "fails because the name is empty",
    "fails because the name is blank",
    "fails because the name is too long",
    "fails because the name has a control character",
    "fails because the description is too long",
    "fails because there is no redirect uri",
    "fails because a redirect uri is relative",
    "fails because a redirect uri has no scheme",
    "fails because a redirect uri has a fragment",
    "fails because a redirect uri is plain http off loopback",
    "fails because a redirect uri has userinfo",
    "fails because a redirect uri is javascript",
    "fails because a redirect uri has a space",
    "fails because a redirect uri has a bad port",
    "fails because a redirect uri is not ascii",
    "fails because a redirect uri is too long",
    "fails because there are too many redirect uris",
    "fails because there is no scope",
    "fails because a scope is unknown",
    "fails because there is no owner",
    "fails because the client type is unknown",
    "fails because the logo is svg",
    "fails because the logo is html behind a png signature",
    "fails because the logo is a gif",
    "fails because the logo is too wide",
    "fails because the logo is too small",
    "fails because the logo is too large",
])
async def test_register_refuses_bad_fields(registry: Stub, overrides: dict[str, Any],
                                           field: str) -> None:
    details = await expect_status(registry.RegisterClient(register_request(**overrides)),
                                  grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(f"{field}:")


@pytest.mark.parametrize("uri", [
    "https://acme.example/callback?source=otesse",
    "http://127.0.0.1:8765/callback",
    "http://localhost/callback",
    "http://[::1]:9000/cb",
], ids=["https with a query", "http on 127.0.0.1", "http on localhost", "http on ::1"])
async def test_register_accepts_valid_redirect_uris(registry: Stub, uri: str) -> None:
    response = await registry.RegisterClient(register_request(redirect_uris=[uri]))
    assert list(response.client.redirect_uris) == [uri]


async def test_logo_is_detected_by_content_and_served_on_request(registry: Stub) -> None:
    webp = image_bytes("WEBP")
    response = await registry.RegisterClient(register_request(
        logo=pb.Logo(data=webp, content_type="image/png")))
    assert response.client.logo_content_type == "image/webp"
    assert len(response.client.logo_sha256) == 64
    without = await registry.GetClient(pb.GetClientRequest(client_id=response.client.client_id))
    assert not without.client.HasField("logo")
    with_logo = await registry.GetClient(pb.GetClientRequest(
        client_id=response.client.client_id, include_logo=True))
    assert with_logo.client.logo.data == webp
    assert with_logo.client.logo.content_type == "image/webp"


async def test_get_unknown_client_is_not_found(registry: Stub) -> None:
    await expect_status(registry.GetClient(pb.GetClientRequest(client_id="otesse_ci_nope")),
                        grpc.StatusCode.NOT_FOUND)
    for malformed in ("", "otesse_ci_\x00", "a b", "x" * 129, "ü"):
        await expect_status(registry.GetClient(pb.GetClientRequest(client_id=malformed)),
                            grpc.StatusCode.INVALID_ARGUMENT)
    await expect_status(registry.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id="\x00", client_secret="x")), grpc.StatusCode.INVALID_ARGUMENT)


async def test_owner_filter_hides_other_users_clients(registry: Stub) -> None:
    client = (await registry.RegisterClient(register_request(owner_user_id="alice"))).client
    other = "mallory"
    for call in (
        registry.GetClient(pb.GetClientRequest(client_id=client.client_id, owner_user_id=other)),
        registry.UpdateClient(pb.UpdateClientRequest(
            client_id=client.client_id, owner_user_id=other, name="pwned",
            update_mask=FieldMask(paths=["name"]))),
        registry.RotateClientSecret(pb.RotateClientSecretRequest(
            client_id=client.client_id, owner_user_id=other)),
        registry.DeleteClient(pb.DeleteClientRequest(client_id=client.client_id,
                                                     owner_user_id=other)),
    ):
        await expect_status(call, grpc.StatusCode.NOT_FOUND)
    still = await registry.GetClient(pb.GetClientRequest(client_id=client.client_id,
                                                         owner_user_id="alice"))
    assert still.client.name == client.name


@pytest.mark.parametrize("secret", [
    "",
    "otesse_cs_wrong",
    credentials.new_credential("otesse_cs_"),
], ids=["fails because the secret is empty", "fails because the secret is malformed",
        "fails because the secret is someone else's shape-valid secret"])
async def test_authenticate_refuses_wrong_secrets(registry: Stub, secret: str) -> None:
    client = (await registry.RegisterClient(register_request())).client
    await expect_status(registry.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id=client.client_id, client_secret=secret)), grpc.StatusCode.UNAUTHENTICATED)


async def test_authenticate_unknown_client_looks_like_a_wrong_secret(registry: Stub) -> None:
    details = await expect_status(registry.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id="otesse_ci_unknown", client_secret="otesse_cs_x")),
        grpc.StatusCode.UNAUTHENTICATED)
    client = (await registry.RegisterClient(register_request())).client
    wrong = await expect_status(registry.AuthenticateClient(pb.AuthenticateClientRequest(
        client_id=client.client_id, client_secret="otesse_cs_x")),
        grpc.StatusCode.UNAUTHENTICATED)
    assert details == wrong


async def test_list_clients_by_owner_newest_first(registry: Stub) -> None:
    owner = "owner-list"
    names = ["First", "Second", "Third"]
    for name in names:
        await registry.RegisterClient(register_request(name=name, owner_user_id=owner))
    await registry.RegisterClient(register_request(name="Someone else's", owner_user_id="x"))
    listed = await registry.ListClients(pb.ListClientsRequest(owner_user_id=owner))
    assert [client.name for client in listed.clients] == list(reversed(names))
    await expect_status(registry.ListClients(pb.ListClientsRequest()),
                        grpc.StatusCode.INVALID_ARGUMENT)


async def test_update_changes_only_masked_fields(registry: Stub) -> None:
    client = (await registry.RegisterClient(register_request())).client
    updated = (await registry.UpdateClient(pb.UpdateClientRequest(
        client_id=client.client_id, name="Renamed", description="ignored: not in the mask",
        redirect_uris=["https://acme.example/new", "http://127.0.0.1:9/cb"],
        logo=pb.Logo(data=image_bytes("JPEG")),
        update_mask=FieldMask(paths=["name", "redirect_uris", "logo"])))).client
    assert updated.name == "Renamed"
    assert updated.description == client.description
    assert list(updated.redirect_uris) == ["https://acme.example/new", "http://127.0.0.1:9/cb"]
    assert updated.logo_content_type == "image/jpeg"
    assert updated.updated_at.ToDatetime() >= client.updated_at.ToDatetime()
    removed = (await registry.UpdateClient(pb.UpdateClientRequest(
        client_id=client.client_id, update_mask=FieldMask(paths=["logo"])))).client
    assert removed.logo_sha256 == "" and removed.logo_content_type == ""


@pytest.mark.parametrize(("mask", "fields", "field"), [
    ([], {}, "update_mask"),
    (["client_type"], {}, "update_mask"),
    (["owner_user_id"], {}, "update_mask"),
    (["name"], {"name": ""}, "name"),
    (["redirect_uris"], {"redirect_uris": ["http://evil.example/cb"]}, "redirect_uris"),
    (["allowed_scopes"], {"allowed_scopes": ["root"]}, "allowed_scopes"),
    (["logo"], {"logo": pb.Logo(data=b"GIF89a")}, "logo"),
], ids=["fails because the mask is empty", "fails because the type cannot change",
        "fails because the owner cannot change", "fails because the new name is empty",
        "fails because the new redirect uri is plain http", "fails because the scope is unknown",
        "fails because the new logo is not an image"])
async def test_update_refuses_bad_changes(registry: Stub, mask: list[str],
                                          fields: dict[str, Any], field: str) -> None:
    client = (await registry.RegisterClient(register_request())).client
    details = await expect_status(registry.UpdateClient(pb.UpdateClientRequest(
        client_id=client.client_id, update_mask=FieldMask(paths=mask), **fields)),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith(f"{field}:")
    unchanged = await registry.GetClient(pb.GetClientRequest(client_id=client.client_id))
    assert unchanged.client == client


async def authenticates(registry: Stub, client_id: str, secret: str) -> bool:
    try:
        await registry.AuthenticateClient(pb.AuthenticateClientRequest(
            client_id=client_id, client_secret=secret))
        return True
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False


async def test_rotation_keeps_previous_secret_for_the_overlap(registry: Stub, pool: Any) -> None:
    first = await registry.RegisterClient(register_request())
    client_id = first.client.client_id
    rotated = await registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=client_id, overlap_seconds=60))
    assert rotated.client_secret != first.client_secret
    assert rotated.HasField("previous_secret_expires_at")
    assert await authenticates(registry, client_id, rotated.client_secret)
    assert await authenticates(registry, client_id, first.client_secret)
    # Once the overlap has passed, the previous secret stops working.
    await pool.execute("UPDATE registry.clients SET previous_secret_expires_at = now()"
                       " - interval '1 second' WHERE client_id = $1", client_id)
    assert not await authenticates(registry, client_id, first.client_secret)
    assert await authenticates(registry, client_id, rotated.client_secret)


async def test_rotation_with_zero_overlap_stops_the_old_secret_at_once(registry: Stub) -> None:
    first = await registry.RegisterClient(register_request())
    client_id = first.client.client_id
    rotated = await registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=client_id, overlap_seconds=0))
    assert not rotated.HasField("previous_secret_expires_at")
    assert not await authenticates(registry, client_id, first.client_secret)
    assert await authenticates(registry, client_id, rotated.client_secret)


async def test_a_second_rotation_retires_the_first_secret(registry: Stub) -> None:
    first = await registry.RegisterClient(register_request())
    client_id = first.client.client_id
    second = await registry.RotateClientSecret(pb.RotateClientSecretRequest(client_id=client_id))
    third = await registry.RotateClientSecret(pb.RotateClientSecretRequest(client_id=client_id))
    assert not await authenticates(registry, client_id, first.client_secret)
    assert await authenticates(registry, client_id, second.client_secret)
    assert await authenticates(registry, client_id, third.client_secret)


@pytest.mark.parametrize("overlap", [-1, 7 * 24 * 3600 + 1],
                         ids=["fails because the overlap is negative",
                              "fails because the overlap is over a week"])
async def test_rotation_refuses_bad_overlap(registry: Stub, overlap: int) -> None:
    client = (await registry.RegisterClient(register_request())).client
    details = await expect_status(registry.RotateClientSecret(pb.RotateClientSecretRequest(
        client_id=client.client_id, overlap_seconds=overlap)), grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("overlap_seconds:")


async def test_delete_removes_the_client(registry: Stub) -> None:
    response = await registry.RegisterClient(register_request())
    client_id = response.client.client_id
    await registry.DeleteClient(pb.DeleteClientRequest(client_id=client_id))
    await expect_status(registry.GetClient(pb.GetClientRequest(client_id=client_id)),
                        grpc.StatusCode.NOT_FOUND)
    assert not await authenticates(registry, client_id, response.client_secret)
    await expect_status(registry.DeleteClient(pb.DeleteClientRequest(client_id=client_id)),
                        grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("call", [
    lambda stub: stub.RotateClientSecret(pb.RotateClientSecretRequest(client_id="otesse_ci_no")),
    lambda stub: stub.UpdateClient(pb.UpdateClientRequest(
        client_id="otesse_ci_no", name="x", update_mask=FieldMask(paths=["name"]))),
    lambda stub: stub.DeleteClient(pb.DeleteClientRequest(client_id="otesse_ci_no")),
], ids=["rotate", "update", "delete"])
async def test_unknown_client_is_not_found_everywhere(
        registry: Stub, call: Callable[[Stub], Any]) -> None:
    await expect_status(call(registry), grpc.StatusCode.NOT_FOUND)


async def test_concurrent_registrations_all_succeed_with_distinct_ids(registry: Stub) -> None:
    responses = await asyncio.gather(*(
        registry.RegisterClient(register_request(name=f"App {i}", owner_user_id="busy"))
        for i in range(40)))
    ids = {response.client.client_id for response in responses}
    secrets_ = {response.client_secret for response in responses}
    assert len(ids) == 40 and len(secrets_) == 40
    listed = await registry.ListClients(pb.ListClientsRequest(owner_user_id="busy"))
    assert {client.client_id for client in listed.clients} == ids
