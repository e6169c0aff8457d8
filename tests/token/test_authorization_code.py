"""The authorization_code grant: single use under concurrency, and a replayed code revokes
every token issued from it (RFC 6749 §4.1.2)."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import credentials
from tests.token.conftest import (
    SCOPES,
    Client,
    TokenService,
    exchange,
    issue_code,
    refresh,
    register_client,
)


async def test_grant_and_first_refresh_token_are_stored_by_hash(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    code = await issue_code(redis, redis_prefix, client, user_id="user-stored")
    body = (await exchange(token.http, client, code)).json()
    row = await pool.fetchrow(
        "SELECT g.user_id, g.client_id, g.scopes, g.code_hash, r.token_hash"
        " FROM token.grants g JOIN token.refresh_tokens r USING (grant_id)"
        " WHERE g.code_hash = $1", credentials.sha256(code))
    assert row is not None
    assert (row["user_id"], row["client_id"], tuple(row["scopes"])) == (
        "user-stored", client.client_id, SCOPES)
    assert row["token_hash"] == credentials.sha256(body["refresh_token"])
    # Only hashes: the code and the token appear nowhere in the database.
    dump = await pool.fetchval("SELECT string_agg(t::text, ' ') FROM token.grants t")
    assert code not in dump and body["refresh_token"] not in dump
    # The code is gone from Redis.
    assert await redis.exists(credentials.authorization_code_key(redis_prefix, code)) == 0


async def test_replayed_code_is_refused_and_revokes_its_tokens(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    first = (await exchange(token.http, client, code)).json()
    valid = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=first["access_token"]))
    assert valid.active

    replay = await exchange(token.http, client, code)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    revoked = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=first["access_token"]))
    assert (revoked.active, revoked.reason) == (False, token_pb2.VALIDATION_REASON_REVOKED)
    refreshed = await refresh(token.http, client, first["refresh_token"])
    assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")


async def test_replay_by_another_client_also_revokes(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        public_client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    first = (await exchange(token.http, client, code)).json()
    replay = await exchange(token.http, public_client, code, code_verifier="v" * 43)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    result = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=first["access_token"]))
    assert result.reason == token_pb2.VALIDATION_REASON_REVOKED


async def test_concurrent_exchanges_of_one_code_succeed_once_then_revoke(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    responses = await asyncio.gather(*(exchange(token.http, client, code) for _ in range(10)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * 9
    assert {response.json()["error"] for response in responses
            if response.status_code == 400} == {"invalid_grant"}
    # The code was used more than once, even if at the same moment: what it issued is revoked.
    winner = next(response.json() for response in responses if response.status_code == 200)
    result = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=winner["access_token"]))
    assert result.reason == token_pb2.VALIDATION_REASON_REVOKED


async def test_failed_check_still_consumes_the_code(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    wrong = await exchange(token.http, client, code, redirect_uri="https://evil.example/cb")
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    retry = await exchange(token.http, client, code)
    assert (retry.status_code, retry.json()["error"]) == (400, "invalid_grant")


async def test_expired_code_is_invalid_grant(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    await redis.delete(credentials.authorization_code_key(redis_prefix, code))  # TTL ran out
    response = await exchange(token.http, client, code)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


async def test_a_code_issued_before_the_user_revoked_the_app_is_void(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str,
        registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    app = await register_client(registry)
    user_id = f"user-{credentials.random_urlsafe(6)}"
    before = await issue_code(redis, redis_prefix, app, user_id=user_id)
    other_user = await issue_code(redis, redis_prefix, app)
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(user_id=user_id,
                                                              client_id=app.client_id))
    # Issued before the revocation: refused, so revoking leaves the app no way back in.
    refused = await exchange(token.http, app, before)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    # Another user's code and a code issued after the revocation still work.
    assert (await exchange(token.http, app, other_user)).status_code == 200
    await asyncio.sleep(1.01)  # the test's code records carry whole seconds
    after = await issue_code(redis, redis_prefix, app, user_id=user_id)
    assert (await exchange(token.http, app, after)).status_code == 200
