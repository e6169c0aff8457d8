"""``otesse-auth grants revoke``: an operator ends grants at once, through the token service,
which records the operator (at the CLI's address, with the command's request id) as the one
who revoked them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import credentials
from services.common.settings import StoreSettings
from tests.audit_rows import events
from tests.cli.test_cli import cli
from tests.token.conftest import (
    TokenService,
    make_settings,
    register_client,
    running,
    tokens_for,
)


@pytest_asyncio.fixture(scope="module")
async def token(store_settings: StoreSettings, registry_address: str,
                redis: aioredis.Redis) -> AsyncIterator[TokenService]:
    async with running(make_settings(store_settings, registry_address)) as service:
        yield service


@pytest.fixture
def env(test_env: dict[str, str], token: TokenService) -> dict[str, str]:
    return {**test_env, "OTESSE_TOKEN_GRPC_ADDR": f"127.0.0.1:{token.grpc_port}"}


async def test_an_operator_revokes_a_grant_and_is_recorded_as_the_operator(
        env: dict[str, str], token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        registry: registry_pb2_grpc.ClientRegistryAsyncStub, pool: asyncpg.Pool) -> None:
    client = await register_client(registry)
    body = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await pool.fetchval(
        "SELECT grant_id::text FROM token.refresh_tokens WHERE token_hash = $1",
        credentials.sha256(body["refresh_token"]))

    out, _ = await cli(env, "grants", "revoke", "--grant", grant_id, "--json")

    assert json.loads(out) == {"revoked_grants": 1}
    verdict = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=body["access_token"]))
    assert verdict.reason == token_pb2.VALIDATION_REASON_REVOKED
    (row,) = await events(pool, where="grant_id = $1::uuid AND event_type = 'grant.revoked'",
                          args=[grant_id])
    assert (row["actor_kind"], row["actor_id"], row["client_ip"], row["client_id"]) == (
        "operator", "operator", "127.0.0.1", client.client_id)
    assert json.loads(row["details"]) == {"reason": "operator"}
    assert row["request_id"] and len(row["request_id"]) == 32


async def test_every_grant_of_a_client(env: dict[str, str], token: TokenService,
                                       redis: aioredis.Redis, redis_prefix: str,
                                       registry: registry_pb2_grpc.ClientRegistryAsyncStub,
                                       ) -> None:
    client = await register_client(registry)
    for _ in range(2):
        await tokens_for(token, redis, redis_prefix, client)
    out, _ = await cli(env, "grants", "revoke", "--client", client.client_id, "--json")
    assert json.loads(out) == {"revoked_grants": 2}


@pytest.mark.parametrize(("args", "message"), [
    ([], "--grant, --user and/or --client"),
    (["--grant", "6f1c8a2e-5b0d-4c3f-9a7e-1d2c3b4a5f60", "--user", "u"], "alone"),
    (["--grant", "not-a-uuid"], "invalid_argument: grant_id"),
], ids=["fails because nothing is named", "fails because a grant id comes with more",
        "fails because the grant id is not one"])
async def test_bad_requests_are_one_line(env: dict[str, str], args: list[str],
                                         message: str) -> None:
    _, err = await cli(env, "grants", "revoke", *args, expect=1)
    assert message in err and len(err.strip().splitlines()) == 1
