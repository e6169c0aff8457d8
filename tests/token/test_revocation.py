"""POST /oauth/revoke (RFC 7009): a refresh token revokes its grant, an access token only
itself, and nothing the caller does not own is touched while the answer stays 200."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2
from services.common import credentials
from tests.token.conftest import Client, TokenService, refresh, tokens_for


async def revoke(token: TokenService, client: Client, value: str,
                 **extra: str) -> Any:
    fields = {"token": value, "client_id": client.client_id, **extra}
    if not client.public:
        fields["client_secret"] = client.secret
    return await token.http.post("/oauth/revoke", data=fields)


async def reason(token: TokenService, access_token: str) -> int:
    result = await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(token=access_token))
    return result.reason


async def test_refresh_token_revokes_the_whole_grant(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    response = await revoke(token, client, second["refresh_token"],
                            token_type_hint="refresh_token")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    for pair in (first, second):
        assert await reason(token, pair["access_token"]) == token_pb2.VALIDATION_REASON_REVOKED
    assert (await refresh(token.http, client, second["refresh_token"])).json()["error"] == \
        "invalid_grant"
    # Marked, never deleted.
    row = await pool.fetchrow("SELECT revoked_at FROM token.grants g JOIN token.refresh_tokens"
                              " r USING (grant_id) WHERE r.token_hash = $1",
                              credentials.sha256(second["refresh_token"]))
    assert row is not None and row["revoked_at"] is not None


async def test_access_token_revokes_only_itself(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    # A wrong hint is only a hint (RFC 7009 §2.1).
    response = await revoke(token, client, pair["access_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    assert await reason(token, pair["access_token"]) == token_pb2.VALIDATION_REASON_REVOKED
    renewed = (await refresh(token.http, client, pair["refresh_token"])).json()
    assert await reason(token, renewed["access_token"]) == token_pb2.VALIDATION_REASON_VALID


async def test_public_client_revokes_its_own_token(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        public_client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, public_client)
    assert (await revoke(token, public_client, pair["refresh_token"])).status_code == 200
    assert await reason(token, pair["access_token"]) == token_pb2.VALIDATION_REASON_REVOKED


@pytest.mark.parametrize("kind", ["refresh_token", "access_token"])
async def test_another_clients_token_is_refused_and_untouched(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        public_client: Client, kind: str) -> None:
    victim = await tokens_for(token, redis, redis_prefix, public_client)
    response = await revoke(token, client, victim[kind])
    # RFC 7009 §2.1: "If this validation fails, the request is refused".
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert await reason(token, victim["access_token"]) == token_pb2.VALIDATION_REASON_VALID


@pytest.mark.parametrize("value", [
    "garbage", "otesse_rt_" + "a" * 49, credentials.new_credential("otesse_rt_"),
    "otesse_at_a.b.c",
], ids=["garbage", "bad checksum", "unknown refresh token", "malformed access token"])
async def test_invalid_tokens_answer_200(token: TokenService, client: Client,
                                         value: str) -> None:
    response = await revoke(token, client, value)
    assert response.status_code == 200


REVOKE_ERRORS = [
    ("missing token", {"token": None}, 400, "invalid_request"),
    ("no client authentication", {"client_id": None, "client_secret": None}, 401,
     "invalid_client"),
    ("wrong secret", {"client_secret": "otesse_cs_wrong"}, 401, "invalid_client"),
    ("json with a repeated member", {"raw_json": True}, 400, "invalid_request"),
]


@pytest.mark.parametrize(("changes", "status", "error"), [case[1:] for case in REVOKE_ERRORS],
                         ids=[case[0] for case in REVOKE_ERRORS])
async def test_revoke_errors(token: TokenService, client: Client, changes: dict[str, Any],
                             status: int, error: str) -> None:
    fields: dict[str, Any] = {"token": "x", "client_id": client.client_id,
                              "client_secret": client.secret}
    if changes.get("raw_json"):
        response = await token.http.post(
            "/oauth/revoke", content=b'{"token": "a", "token": "b"}',
            headers={"Content-Type": "application/json"})
    else:
        fields.update({key: value for key, value in changes.items()})
        response = await token.http.post(
            "/oauth/revoke", data={k: v for k, v in fields.items() if v is not None})
    assert response.status_code == status
    assert response.json()["error"] == error
