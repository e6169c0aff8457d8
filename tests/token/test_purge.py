"""Purge: deletes what can no longer protect anything, in bounded batches, and keeps everything
still needed (live grants, recent revocations the deny-list rebuild reads, unexpired tokens)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2
from services.common import credentials
from services.token.purge import Purger
from tests.token.conftest import (
    KEK,
    Client,
    TokenService,
    insert_previous_key,
    refresh,
    tokens_for,
)


async def grant_of(token: TokenService, access_token: str) -> str:
    result = await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(token=access_token))
    return result.grant_id


async def exists(pool: asyncpg.Pool, table: str, column: str, value: object) -> bool:
    return bool(await pool.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM token.{table} WHERE {column} = $1)", value))


async def test_purge_removes_the_dead_and_keeps_the_living(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    live = await tokens_for(token, redis, redis_prefix, client)
    rotated = (await refresh(token.http, client, live["refresh_token"])).json()
    long_revoked = await tokens_for(token, redis, redis_prefix, client)
    just_revoked = await tokens_for(token, redis, redis_prefix, client)
    expired = await tokens_for(token, redis, redis_prefix, client)
    ids = {name: await grant_of(token, pair["access_token"]) for name, pair in (
        ("live", live), ("long_revoked", long_revoked), ("just_revoked", just_revoked),
        ("expired", expired))}
    await pool.execute("UPDATE token.grants SET revoked_at = now() - interval '2 hours'"
                       " WHERE grant_id = $1::uuid", ids["long_revoked"])
    await pool.execute("UPDATE token.grants SET revoked_at = now() - interval '10 minutes'"
                       " WHERE grant_id = $1::uuid", ids["just_revoked"])
    # Expired: the grant and its one refresh token, two hours ago.
    await pool.execute("UPDATE token.grants SET expires_at = now() - interval '2 hours'"
                       " WHERE grant_id = $1::uuid", ids["expired"])
    await pool.execute("UPDATE token.refresh_tokens SET expires_at = now() - interval"
                       " '2 hours' WHERE grant_id = $1::uuid", ids["expired"])
    await pool.execute("UPDATE token.refresh_tokens SET expires_at = now() - interval"
                       " '1 second', rotated_at = now() - interval '1 minute'"
                       " WHERE token_hash = $1", credentials.sha256(live["refresh_token"]))
    successor = (await refresh(token.http, client, rotated["refresh_token"])).json()
    # The rotation (and the successor carrying its sealed copy) a minute ago.
    sealed_hash = credentials.sha256(successor["refresh_token"])
    await pool.execute("UPDATE token.refresh_tokens SET rotated_at = now() - interval"
                       " '1 minute' WHERE token_hash = $1",
                       credentials.sha256(rotated["refresh_token"]))
    await pool.execute("UPDATE token.refresh_tokens SET created_at = now() - interval"
                       " '1 minute' WHERE token_hash = $1", sealed_hash)
    for jti, when in (("purge-old-jti", "- interval '2 hours'"),
                      ("purge-live-jti", "+ interval '1 hour'")):
        await pool.execute(
            "INSERT INTO token.revoked_access_tokens (jti, grant_id, client_id, expires_at)"
            f" VALUES ($1, $2::uuid, 'c', now() {when})", jti, ids["live"])

    for user_id, when in (("purge-old-user", "2 days"), ("purge-new-user", "1 hour")):
        await pool.execute(
            "INSERT INTO token.authorization_revocations (user_id, client_id, revoked_at)"
            f" VALUES ($1, 'purge-client', now() - interval '{when}')", user_id)

    report = await Purger(pool, access_token_ttl=3600, retry_window=10, batch_size=2).run()

    assert report.grants >= 2 and report.refresh_tokens >= 1
    assert report.sealed_copies >= 1 and report.revoked_access_tokens >= 1
    for name, kept in (("live", True), ("just_revoked", True), ("long_revoked", False),
                       ("expired", False)):
        present = await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM token.grants WHERE grant_id = $1::uuid)", ids[name])
        assert present is kept, name
    # A purged grant's refresh tokens go with it, live or not (no foreign key cascades:
    # migration 0005).
    assert not await exists(pool, "refresh_tokens", "token_hash",
                            credentials.sha256(long_revoked["refresh_token"]))
    for name in ("long_revoked", "expired"):
        assert not await exists(pool, "refresh_tokens", "grant_id", ids[name]), name
    assert not await exists(pool, "refresh_tokens", "token_hash",
                            credentials.sha256(live["refresh_token"]))
    assert await pool.fetchval("SELECT predecessor_sealed FROM token.refresh_tokens"
                               " WHERE token_hash = $1", sealed_hash) is None
    assert not await exists(pool, "revoked_access_tokens", "jti", "purge-old-jti")
    assert await exists(pool, "revoked_access_tokens", "jti", "purge-live-jti")
    # A revocation bars older codes for a day, then goes.
    assert report.authorization_revocations >= 1
    assert not await exists(pool, "authorization_revocations", "user_id", "purge-old-user")
    assert await exists(pool, "authorization_revocations", "user_id", "purge-new-user")
    # The living still work.
    assert (await refresh(token.http, client, successor["refresh_token"])).status_code == 200
    # Purging again finds nothing more of what it just removed.
    second = await Purger(pool, access_token_ttl=3600, retry_window=10).run()
    assert second.grants == 0 and second.sealed_copies == 0


async def test_purge_keeps_a_grant_whose_newer_refresh_token_lives(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # A rotation writes refresh tokens only: the grant's own expires_at stays its first
    # token's. Thirty days on, a grant refreshed since is alive and must stay.
    first = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, first["access_token"])
    second = (await refresh(token.http, client, first["refresh_token"])).json()
    await pool.execute("UPDATE token.grants SET expires_at = now() - interval '2 hours'"
                       " WHERE grant_id = $1::uuid", grant_id)
    await pool.execute("UPDATE token.refresh_tokens SET expires_at = now() - interval"
                       " '2 hours' WHERE token_hash = $1",
                       credentials.sha256(first["refresh_token"]))

    await Purger(pool, access_token_ttl=3600, retry_window=10).run()

    assert await exists(pool, "grants", "grant_id", grant_id)
    assert (await refresh(token.http, client, second["refresh_token"])).status_code == 200


async def test_purge_removes_expired_keys_only(token: TokenService, pool: asyncpg.Pool) -> None:
    current = await pool.fetchval("SELECT kid FROM token.signing_keys WHERE state = 'current'")
    expired = await insert_previous_key(pool, expires_in_seconds=-1)
    live = await insert_previous_key(pool, expires_in_seconds=3600)
    report = await Purger(pool, access_token_ttl=3600, retry_window=10).run()
    assert report.signing_keys >= 1
    assert not await exists(pool, "signing_keys", "kid", expired.kid)
    assert await exists(pool, "signing_keys", "kid", live.kid)
    assert await exists(pool, "signing_keys", "kid", current)


def cli(test_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **test_env, "OTESSE_TOKEN_KEK": KEK}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_cli_keys_rotate_list_and_purge(
        token: TokenService, test_env: dict[str, str], redis: aioredis.Redis,
        redis_prefix: str, client: Client) -> None:
    before = await tokens_for(token, redis, redis_prefix, client)
    listed = await asyncio.to_thread(cli, test_env, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    old_current = next(key["kid"] for key in keys if key["state"] == "current")
    old_next = next(key["kid"] for key in keys if key["state"] == "next")

    refused = await asyncio.to_thread(cli, test_env, "keys", "rotate")
    # The next key was published moments ago (tests rotate often): JWKS caches may lack it.
    assert refused.returncode == 1 and "--force" in refused.stderr
    rotated = await asyncio.to_thread(cli, test_env, "keys", "rotate", "--force", "--json")

    assert rotated.returncode == 0, rotated.stderr
    states = {key["kid"]: key["state"] for key in json.loads(rotated.stdout)}
    assert states[old_next] == "current" and states[old_current] == "previous"
    assert list(states.values()).count("next") == 1
    await token.components.ring.refresh()
    after = await tokens_for(token, redis, redis_prefix, client)
    for pair in (before, after):
        result = await token.grpc.ValidateToken(
            token_pb2.ValidateTokenRequest(token=pair["access_token"]))
        assert result.active

    purged = await asyncio.to_thread(cli, test_env, "purge", "--json")
    assert purged.returncode == 0, purged.stderr
    assert set(json.loads(purged.stdout)) == {"sealed_copies", "refresh_tokens", "grants",
                                              "revoked_access_tokens", "signing_keys",
                                              "authorization_revocations", "revocation_log",
                                              "audit_events"}
