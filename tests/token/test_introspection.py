"""POST /oauth/introspect (RFC 7662): confidential clients see their own tokens; everything else,
including another client's live token, is exactly {"active": false}."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from services.common import credentials
from tests.token.conftest import Client, TokenService, refresh, tokens_for


async def introspect(token: TokenService, client: Client, value: str) -> Any:
    return await token.http.post("/oauth/introspect", data={
        "token": value, "client_id": client.client_id, "client_secret": client.secret})


async def test_own_access_token(token: TokenService, redis: aioredis.Redis, redis_prefix: str,
                                client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client, user_id="user-intro")
    response = await introspect(token, client, pair["access_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert (body["sub"], body["client_id"], body["scope"], body["token_type"]) == (
        "user-intro", client.client_id, pair["scope"], "Bearer")
    assert (body["iss"], body["aud"]) == (token.settings.issuer, token.settings.audience)
    assert body["exp"] - body["iat"] == 3600


async def test_own_refresh_token_then_rotated(token: TokenService, redis: aioredis.Redis,
                                              redis_prefix: str, client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client, user_id="user-intro-rt")
    body = (await introspect(token, client, pair["refresh_token"])).json()
    assert body["active"] is True
    assert (body["sub"], body["client_id"]) == ("user-intro-rt", client.client_id)
    assert body["exp"] - body["iat"] == pytest.approx(30 * 24 * 3600, abs=5)
    await refresh(token.http, client, pair["refresh_token"])
    assert (await introspect(token, client, pair["refresh_token"])).json() == {"active": False}


async def test_revoked_token_is_inactive(token: TokenService, redis: aioredis.Redis,
                                         redis_prefix: str, client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    await token.http.post("/oauth/revoke", data={
        "token": pair["refresh_token"], "client_id": client.client_id,
        "client_secret": client.secret})
    for value in (pair["access_token"], pair["refresh_token"]):
        assert (await introspect(token, client, value)).json() == {"active": False}


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_another_clients_token_looks_unknown(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        public_client: Client, kind: str) -> None:
    theirs = await tokens_for(token, redis, redis_prefix, public_client)
    response = await introspect(token, client, theirs[kind])
    assert (response.status_code, response.json()) == (200, {"active": False})


@pytest.mark.parametrize("value", [
    "garbage", credentials.new_credential("otesse_rt_"), "otesse_at_x.y.z"],
    ids=["garbage", "unknown refresh token", "malformed access token"])
async def test_unknown_tokens_are_inactive(token: TokenService, client: Client,
                                           value: str) -> None:
    assert (await introspect(token, client, value)).json() == {"active": False}


async def test_public_clients_cannot_introspect(token: TokenService, redis: aioredis.Redis,
                                                redis_prefix: str,
                                                public_client: Client) -> None:
    pair = await tokens_for(token, redis, redis_prefix, public_client)
    response = await token.http.post("/oauth/introspect", data={
        "token": pair["access_token"], "client_id": public_client.client_id})
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_missing_token_is_invalid_request(token: TokenService, client: Client) -> None:
    response = await token.http.post("/oauth/introspect", data={
        "client_id": client.client_id, "client_secret": client.secret})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
