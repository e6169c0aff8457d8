"""What a refresh writes in Postgres (issue #13: a rotation touches as few rows as it can), and
that writing less gave up none of the rotation's promises: the grant row is read, never written;
the old token is marked and its successor inserted by one statement; a revocation racing the
rotation either lands first (nothing is minted) or waits for it (and then ends the successor
too)."""

from __future__ import annotations

import asyncio
import base64
import json

import asyncpg
import httpx
import redis.asyncio as aioredis

from otesse.auth.v1 import token_pb2
from services.common import credentials
from tests.token.conftest import Client, TokenService, refresh, tokens_for


async def grant_of(token: TokenService, access_token: str) -> str:
    result = await token.grpc.ValidateToken(token_pb2.ValidateTokenRequest(token=access_token))
    return result.grant_id


async def test_a_refresh_marks_the_old_token_inserts_one_and_leaves_the_grant_row_alone(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, first["access_token"])
    # xmin changes with every new version of a row: an UPDATE of the grant would show here.
    grant_version = await pool.fetchval(
        "SELECT xmin::text FROM token.grants WHERE grant_id = $1::uuid", grant_id)

    second = (await refresh(token.http, client, first["refresh_token"])).json()

    assert await pool.fetchval("SELECT xmin::text FROM token.grants WHERE grant_id = $1::uuid",
                               grant_id) == grant_version
    rows = await pool.fetch(
        "SELECT token_hash, rotated_at IS NOT NULL AS rotated, successor_hash,"
        " successor_sealed IS NOT NULL AS sealed_on_old,"
        " predecessor_sealed IS NOT NULL AS sealed_on_new, xmin::text AS version"
        " FROM token.refresh_tokens WHERE grant_id = $1::uuid ORDER BY created_at", grant_id)
    old_hash, new_hash = (credentials.sha256(first["refresh_token"]),
                          credentials.sha256(second["refresh_token"]))
    assert [row["token_hash"] for row in rows] == [old_hash, new_hash]
    assert rows[0]["rotated"] and rows[0]["successor_hash"] == new_hash
    assert not rows[1]["rotated"] and rows[1]["successor_hash"] is None
    # The sealed copy rides on the successor's insert, not on the old row's update.
    assert not rows[0]["sealed_on_old"] and rows[1]["sealed_on_new"]
    # One statement: the old token's new version and the successor share a transaction.
    assert rows[0]["version"] == rows[1]["version"]
    # The grant's listing still shows the use and the later expiry.
    listed = await pool.fetchrow(
        "SELECT g.expires_at AS own, r.expires_at AS newest FROM token.grants g"
        " JOIN token.refresh_tokens r ON r.token_hash = $2 WHERE g.grant_id = $1::uuid",
        grant_id, new_hash)
    assert listed is not None and listed["newest"] >= listed["own"]


async def test_the_old_token_is_updated_in_place_without_index_entries(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # A HOT update (heap-only tuple): the old version points to the new one on the same page
    # and no index gets an entry. pageinspect shows the flag on the old version's line pointer.
    await pool.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    first = await tokens_for(token, redis, redis_prefix, client)
    location = await pool.fetchval("SELECT ctid::text FROM token.refresh_tokens"
                                   " WHERE token_hash = $1",
                                   credentials.sha256(first["refresh_token"]))
    block, item = (int(part) for part in location.strip("()").split(","))

    assert (await refresh(token.http, client, first["refresh_token"])).status_code == 200

    flags = await pool.fetchval(
        "SELECT t_infomask2 FROM heap_page_items(get_raw_page('token.refresh_tokens', $1))"
        " WHERE lp = $2", block, item)
    heap_hot_updated = 0x4000
    assert flags & heap_hot_updated
    assert await pool.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'token.refresh_tokens'::regclass"
    ) == ["fillfactor=90"]


async def test_a_copy_an_older_replica_sealed_on_the_old_token_still_answers_the_retry(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # Rolling update: a replica from before migration 0004 kept the copy on the old row.
    first = await tokens_for(token, redis, redis_prefix, client)
    second = (await refresh(token.http, client, first["refresh_token"]))
    old_hash = credentials.sha256(first["refresh_token"])
    new_hash = credentials.sha256(second.json()["refresh_token"])
    await pool.execute(
        "UPDATE token.refresh_tokens r SET successor_sealed = s.predecessor_sealed"
        " FROM token.refresh_tokens s WHERE r.token_hash = $1 AND s.token_hash = $2", old_hash,
        new_hash)
    await pool.execute("UPDATE token.refresh_tokens SET predecessor_sealed = NULL"
                       " WHERE token_hash = $1", new_hash)

    retried = await refresh(token.http, client, first["refresh_token"])

    assert retried.status_code == 200 and retried.json() == second.json()


async def test_a_grant_refreshed_long_after_its_exchange_is_logged_until_its_newest_token(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # The grant row no longer records the last refresh: the revocation log (0003, amended by
    # 0004) must still keep a revoked grant as long as its newest access token lives, or a
    # local validator would forget the revocation while that token is still valid.
    first = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, first["access_token"])
    await pool.execute("UPDATE token.grants SET created_at = created_at - interval '3 hours'"
                       " WHERE grant_id = $1::uuid", grant_id)
    await pool.execute("UPDATE token.refresh_tokens SET created_at = created_at - interval"
                       " '3 hours' WHERE grant_id = $1::uuid", grant_id)
    newest = (await refresh(token.http, client, first["refresh_token"])).json()
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))

    relevant_until = await pool.fetchval(
        "SELECT relevant_until FROM token.revocation_log WHERE kind = 'grant' AND value = $1",
        grant_id)
    payload = newest["access_token"].removeprefix("otesse_at_").split(".")[1]
    newest_exp = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))["exp"]
    assert relevant_until.timestamp() >= newest_exp
    assert relevant_until.timestamp() <= newest_exp + 60 + 2


async def refresh_while_held(token: TokenService, client: Client, refresh_token: str, *,
                             database_url: str, statement: str, grant_id: str) -> httpx.Response:
    """Refreshes while another transaction, which ran ``statement`` on the grant, holds it;
    checks that the rotation waits for that transaction (it reads the grant ``FOR SHARE``),
    commits it, and returns the refresh's answer."""
    holder = await asyncpg.connect(database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(statement, grant_id)
        refreshing = asyncio.ensure_future(refresh(token.http, client, refresh_token))
        await asyncio.sleep(0.5)
        assert not refreshing.done()
        await transaction.commit()
        return await refreshing
    finally:
        await holder.close()


async def test_a_revocation_committed_while_a_rotation_waits_mints_nothing(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, database_url: str) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, pair["access_token"])
    # The revocation holds the grant row when the refresh arrives, so the rotation waits ...
    answer = await refresh_while_held(
        token, client, pair["refresh_token"], database_url=database_url, grant_id=grant_id,
        statement="UPDATE token.grants SET revoked_at = now() WHERE grant_id = $1::uuid")

    # ... and then sees it: no successor, no new pair.
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE grant_id = $1::uuid", grant_id) == 1


# Refresh tokens carry no foreign key to their grant (migration 0005: the check cost a query
# per token inserted). What the key promised is kept by the statements themselves.

async def test_refresh_tokens_carry_no_foreign_key_check(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval(
        "SELECT count(*) FROM pg_constraint"
        " WHERE conrelid = 'token.refresh_tokens'::regclass AND contype = 'f'") == 0


async def test_a_grant_deleted_while_a_rotation_waits_leaves_no_token_behind(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, database_url: str) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, pair["access_token"])
    # A purge (or an operator) holds the grant's deletion when the refresh arrives, so the
    # rotation waits ...
    answer = await refresh_while_held(
        token, client, pair["refresh_token"], database_url=database_url, grant_id=grant_id,
        statement="WITH gone AS (DELETE FROM token.grants WHERE grant_id = $1::uuid"
                  " RETURNING grant_id)"
                  " DELETE FROM token.refresh_tokens r USING gone"
                  " WHERE r.grant_id = gone.grant_id")

    # ... and then finds no grant: nothing minted, no successor left without its grant.
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE grant_id = $1::uuid", grant_id) == 0


async def test_a_refresh_token_whose_grant_is_gone_is_dead(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    # However a token came to outlive its grant (a row restored by hand, an older purge), it
    # can be neither refreshed nor introspected: every read of a refresh token joins its grant.
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = await grant_of(token, pair["access_token"])
    await pool.execute("DELETE FROM token.grants WHERE grant_id = $1::uuid", grant_id)
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE grant_id = $1::uuid", grant_id) == 1

    answer = await refresh(token.http, client, pair["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    looked_up = await token.http.post("/oauth/introspect", data={
        "token": pair["refresh_token"], "client_id": client.client_id,
        "client_secret": client.secret})
    assert looked_up.status_code == 200 and looked_up.json() == {"active": False}
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens"
                               " WHERE grant_id = $1::uuid", grant_id) == 1
