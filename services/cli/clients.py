"""``otesse-auth clients create|list|show|rotate-secret|delete``, through the registry's gRPC API.

Scripts use ``--json``: ``clients create … --json`` prints ``client_id`` and, for confidential
clients, ``client_secret`` (shown this once only).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.cli.output import emit
from services.common.grpc_client import create_channel
from services.common.service_auth import caller_interceptors
from services.common.settings import (
    DEFAULT_REGISTRY_ADDR,
    Env,
    GrpcTlsSettings,
    ServiceCredentialSettings,
)

T = TypeVar("T")
DEFAULT_OWNER = "otesse-admin"


class ClientsError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.cli_message = message


def _call(action: Callable[[registry_pb2_grpc.ClientRegistryAsyncStub], Awaitable[T]]) -> T:
    env = Env()
    target = env.text("OTESSE_REGISTRY_ADDR", DEFAULT_REGISTRY_ADDR)
    tls = GrpcTlsSettings.from_env(env)
    key = ServiceCredentialSettings.from_env(env).key_bytes

    async def run() -> T:
        # The registry lets only the operator CLI and the authorize service change clients.
        channel = create_channel(target, services=("otesse.auth.v1.ClientRegistry",), tls=tls,
                                 interceptors=caller_interceptors(key, caller="cli",
                                                                  audience="registry"))
        try:
            return await action(registry_pb2_grpc.ClientRegistryStub(channel))
        finally:
            await channel.close()

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise ClientsError(f"the registry at {target} is not reachable (is the stack "
                               "running? `make run`)") from None
        raise ClientsError(f"{exc.code().name.lower()}: {exc.details()}") from None


def _row(client: pb.Client, secret: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {
        "client_id": client.client_id,
        "name": client.name,
        "description": client.description,
        "client_type": "public" if client.client_type == pb.CLIENT_TYPE_PUBLIC else "confidential",
        "redirect_uris": list(client.redirect_uris),
        "scope": " ".join(client.allowed_scopes),
        "owner_user_id": client.owner_user_id,
        "has_logo": bool(client.logo_sha256),
        "created_at": client.created_at.ToDatetime().isoformat() + "Z",
    }
    if secret:
        row["client_secret"] = secret
    return row


def _create(args: argparse.Namespace) -> int:
    logo = None
    if args.logo:
        logo = pb.Logo(data=Path(args.logo).read_bytes())
    request = pb.RegisterClientRequest(
        name=args.name,
        description=args.description,
        redirect_uris=args.redirect_uri,
        allowed_scopes=args.scope.split(),
        client_type=pb.CLIENT_TYPE_PUBLIC if args.public else pb.CLIENT_TYPE_CONFIDENTIAL,
        owner_user_id=args.owner,
        logo=logo,
    )
    response = _call(lambda stub: stub.RegisterClient(request, timeout=10))
    emit(_row(response.client, response.client_secret), as_json=args.json)
    return 0


def _list(args: argparse.Namespace) -> int:
    response = _call(lambda stub: stub.ListClients(
        pb.ListClientsRequest(owner_user_id=args.owner), timeout=10))
    emit([_row(client) for client in response.clients], as_json=args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    response = _call(lambda stub: stub.GetClient(
        pb.GetClientRequest(client_id=args.client_id), timeout=10))
    emit(_row(response.client), as_json=args.json)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    request = pb.RotateClientSecretRequest(client_id=args.client_id)
    if args.overlap_seconds is not None:
        request.overlap_seconds = args.overlap_seconds
    response = _call(lambda stub: stub.RotateClientSecret(request, timeout=10))
    row = _row(response.client, response.client_secret)
    if response.HasField("previous_secret_expires_at"):
        row["previous_secret_expires_at"] = (
            response.previous_secret_expires_at.ToDatetime().isoformat() + "Z")
    emit(row, as_json=args.json)
    return 0


def _delete(args: argparse.Namespace) -> int:
    _call(lambda stub: stub.DeleteClient(pb.DeleteClientRequest(client_id=args.client_id),
                                         timeout=10))
    print(f"deleted {args.client_id}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("clients", help="manage OAuth clients")
    commands = parser.add_subparsers(dest="clients_command", required=True, metavar="ACTION")

    create = commands.add_parser("create", help="register a client")
    create.add_argument("--name", required=True)
    create.add_argument("--description", default="")
    create.add_argument("--redirect-uri", action="append", required=True,
                        help="repeat for several")
    create.add_argument("--scope", required=True, help='space-separated, e.g. "bookings:read"')
    create.add_argument("--public", action="store_true",
                        help="a public client (no secret; PKCE required)")
    create.add_argument("--owner", default=DEFAULT_OWNER, help="owning user id")
    create.add_argument("--logo", help="path to a PNG, JPEG or WebP logo")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_create)

    list_ = commands.add_parser("list", help="list the clients a user owns")
    list_.add_argument("--owner", default=DEFAULT_OWNER, help="owning user id")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=_list)

    show = commands.add_parser("show", help="show one client")
    show.add_argument("client_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    rotate = commands.add_parser("rotate-secret", help="issue a new client secret")
    rotate.add_argument("client_id")
    rotate.add_argument("--overlap-seconds", type=int, default=None,
                        help="how long the old secret keeps working (0: stop it now)")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_rotate)

    delete = commands.add_parser("delete", help="delete a client")
    delete.add_argument("client_id")
    delete.set_defaults(handler=_delete)
