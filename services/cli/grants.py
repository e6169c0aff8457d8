"""``otesse-auth grants revoke``: an operator ends grants, and every token of them, at once
(``TokenService.RevokeGrant``, as the CLI: the token service records it as the operator's).

One grant by its id, every grant of a user, every grant of a client, or a user's grants of one
client.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.cli.output import emit
from services.common.grpc_client import create_channel
from services.common.service_auth import caller_interceptors
from services.common.settings import (
    DEFAULT_TOKEN_GRPC_ADDR,
    Env,
    GrpcTlsSettings,
    ServiceCredentialSettings,
)


class GrantsError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.cli_message = message


def _revoke(args: argparse.Namespace) -> int:
    if not (args.grant or args.user or args.client):
        raise GrantsError("name what to revoke: --grant, --user and/or --client")
    if args.grant and (args.user or args.client):
        raise GrantsError("--grant names one grant: give it alone")
    env = Env()
    target = env.text("OTESSE_TOKEN_GRPC_ADDR", DEFAULT_TOKEN_GRPC_ADDR)
    tls = GrpcTlsSettings.from_env(env)
    key = ServiceCredentialSettings.from_env(env).key_bytes
    request = token_pb2.RevokeGrantRequest(grant_id=args.grant or "", user_id=args.user or "",
                                           client_id=args.client or "")

    async def run() -> int:
        channel = create_channel(target, services=("otesse.auth.v1.TokenService",), tls=tls,
                                 interceptors=caller_interceptors(key, caller="cli",
                                                                  audience="token"))
        try:
            stub = token_pb2_grpc.TokenServiceStub(channel)
            response = await stub.RevokeGrant(request, timeout=10)
            return response.revoked_grants
        finally:
            await channel.close()

    try:
        revoked = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise GrantsError(f"the token service at {target} is not reachable (is the stack "
                              "running? `make run`)") from None
        raise GrantsError(f"{exc.code().name.lower()}: {exc.details()}") from None
    emit({"revoked_grants": revoked}, as_json=args.json)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("grants", help="revoke grants (and all their tokens)")
    commands = parser.add_subparsers(dest="grants_command", required=True, metavar="ACTION")
    revoke = commands.add_parser("revoke", help="revoke grants at once")
    revoke.add_argument("--grant", help="one grant, by its id")
    revoke.add_argument("--user", help="every grant of this user (of --client only, if given)")
    revoke.add_argument("--client", help="every grant of this client")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(handler=_revoke)
