"""Attacks on grant administration over gRPC (DESIGN §5): only the authorize service may list
or revoke grants, its identity proven by a service credential here (TLS off); a resource
server — with a credential of its own, a stolen or forged one, or none — may only validate."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common import service_auth
from services.common.grpc_client import create_channel
from tests.callers import DEV_KEY
from tests.token.conftest import Client, TokenService, tokens_for

OTHER_KEY = b"k" * 32
Mint = Callable[[], str | None]

ATTACKS: list[tuple[str, Mint, grpc.StatusCode]] = [
    ("fails because no credential is sent",
     lambda: None, grpc.StatusCode.UNAUTHENTICATED),
    ("fails because a resource server may only validate",
     lambda: service_auth.mint(DEV_KEY, caller="bookings", audience="token"),
     grpc.StatusCode.PERMISSION_DENIED),
    ("fails because the token service is no administrator either",
     lambda: service_auth.mint(DEV_KEY, caller="token", audience="token"),
     grpc.StatusCode.PERMISSION_DENIED),
    ("fails because the credential is signed with another key",
     lambda: service_auth.mint(OTHER_KEY, caller="authorize", audience="token"),
     grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the credential expired",
     lambda: service_auth.mint(DEV_KEY, caller="authorize", audience="token",
                               lifetime=-service_auth.CLOCK_SKEW_SECONDS - 1),
     grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the credential is for the registry",
     lambda: service_auth.mint(DEV_KEY, caller="authorize", audience="registry"),
     grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the credential claims too long a life",
     lambda: service_auth.mint(DEV_KEY, caller="authorize", audience="token",
                               lifetime=24 * 3600),
     grpc.StatusCode.UNAUTHENTICATED),
    ("fails because a resource server's credential was edited to say authorize",
     lambda: _renamed(service_auth.mint(DEV_KEY, caller="bookings", audience="token")),
     grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the credential is garbage",
     lambda: "v1.%%%.???", grpc.StatusCode.UNAUTHENTICATED),
    ("fails because the credential is too long",
     lambda: "v1." + "A" * 2_000 + ".x", grpc.StatusCode.UNAUTHENTICATED),
]


def _renamed(credential: str) -> str:
    version, payload, mac = credential.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "authorize"
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{edited}.{mac}"


@pytest_asyncio.fixture
async def bare(token: TokenService) -> AsyncIterator[token_pb2_grpc.TokenServiceAsyncStub]:
    """A channel with no identity of its own: the attacker chooses the metadata."""
    channel = create_channel(f"127.0.0.1:{token.grpc_port}",
                             services=("otesse.auth.v1.TokenService",))
    yield token_pb2_grpc.TokenServiceStub(channel)
    await channel.close()


def metadata(mint: Mint) -> tuple[tuple[str, str], ...]:
    credential = mint()
    return () if credential is None else ((service_auth.METADATA_KEY, credential),)


@pytest.mark.parametrize(("mint", "code"), [case[1:] for case in ATTACKS],
                         ids=[case[0] for case in ATTACKS])
async def test_revoke_grant_is_refused_to_anyone_but_authorize(
        token: TokenService, bare: token_pb2_grpc.TokenServiceAsyncStub, redis: aioredis.Redis,
        redis_prefix: str, client: Client, mint: Mint, code: grpc.StatusCode) -> None:
    victim = "user-victim-revoke"
    pair = await tokens_for(token, redis, redis_prefix, client, user_id=victim)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bare.RevokeGrant(token_pb2.RevokeGrantRequest(user_id=victim),
                               metadata=metadata(mint))

    assert refused.value.code() == code
    # The victim's tokens still work.
    result = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=pair["access_token"]))
    assert result.active


@pytest.mark.parametrize(("mint", "code"), [case[1:] for case in ATTACKS],
                         ids=[case[0] for case in ATTACKS])
async def test_list_grants_is_refused_to_anyone_but_authorize(
        token: TokenService, bare: token_pb2_grpc.TokenServiceAsyncStub, redis: aioredis.Redis,
        redis_prefix: str, client: Client, mint: Mint, code: grpc.StatusCode) -> None:
    victim = "user-victim-list"
    await tokens_for(token, redis, redis_prefix, client, user_id=victim)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bare.ListGrants(token_pb2.ListGrantsRequest(user_id=victim),
                              metadata=metadata(mint))

    assert refused.value.code() == code
    # The answer says nothing about the grants, nor why the credential failed.
    details = refused.value.details() or ""
    assert victim not in details and client.client_id not in details
    assert "signature" not in details and "expired" not in details


@pytest.mark.parametrize("mint", [
    lambda: None,
    lambda: service_auth.mint(DEV_KEY, caller="bookings", audience="token"),
], ids=["no credential", "a resource server's credential"])
async def test_validation_stays_open_to_every_resource_server(
        token: TokenService, bare: token_pb2_grpc.TokenServiceAsyncStub, redis: aioredis.Redis,
        redis_prefix: str, client: Client, mint: Mint) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    result = await bare.ValidateToken(
        token_pb2.ValidateTokenRequest(token=pair["access_token"]), metadata=metadata(mint))
    assert result.active


async def test_the_authorize_service_lists_and_revokes(
        token: TokenService, bare: token_pb2_grpc.TokenServiceAsyncStub, redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    user_id = "user-admin-ok"
    pair = await tokens_for(token, redis, redis_prefix, client, user_id=user_id)
    as_authorize: Any = ((service_auth.METADATA_KEY, service_auth.mint(
        DEV_KEY, caller="authorize", audience="token")),)

    listed = await bare.ListGrants(token_pb2.ListGrantsRequest(user_id=user_id),
                                   metadata=as_authorize)
    revoked = await bare.RevokeGrant(token_pb2.RevokeGrantRequest(
        user_id=user_id, client_id=client.client_id), metadata=as_authorize)

    assert [grant.client_id for grant in listed.grants] == [client.client_id]
    assert revoked.revoked_grants == 1
    result = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=pair["access_token"]))
    assert result.reason == token_pb2.VALIDATION_REASON_REVOKED
