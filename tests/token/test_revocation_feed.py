"""The revocation feed (``TokenService.WatchRevocations``) and the log behind it: every path
that revokes reaches subscribers; ids follow commit order; snapshots for a cursor that is
missing, purged or from the future; several replicas on one database; a replica restarted
under a subscriber; the bounds (subscribers, slow subscribers); purge and its horizon."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from dataclasses import replace

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import credentials
from services.common.audit import Origin
from services.common.settings import StoreSettings
from services.token.purge import Purger
from services.token.revocation_feed import RevocationFeed, Subscription
from services.token.revocation_log import RevocationLog
from services.token.revocations import LoggedRevocation
from services.token.servicer import ACCESS
from tests.conftest import free_port
from tests.token.conftest import (
    Client,
    TokenService,
    exchange,
    issue_code,
    make_settings,
    refresh,
    register_client,
    running,
    tokens_for,
)
from tests.token.feed_watcher import stream_error, watching

WATCH = "/otesse.auth.v1.TokenService/WatchRevocations"


def claims_of(access_token: str) -> dict[str, object]:
    payload = access_token[len("otesse_at_"):].split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "==="))
    return decoded


async def log_head(pool: asyncpg.Pool) -> int:
    head: int = await pool.fetchval("SELECT coalesce(max(id), 0) FROM token.revocation_log")
    return head


async def test_every_revoking_path_reaches_a_subscriber(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, registry: registry_pb2_grpc.ClientRegistryAsyncStub) -> None:
    async with watching(token.grpc_port, cursor=await log_head(pool)) as watcher:
        expected: dict[str, str] = {}
        # RFC 7009 with a refresh token: the grant.
        pair = await tokens_for(token, redis, redis_prefix, client)
        await token.http.post("/oauth/revoke", auth=(client.client_id, client.secret),
                              data={"token": pair["refresh_token"]})
        expected["revoke endpoint, refresh token"] = str(claims_of(pair["access_token"])[
            "grant_id"])
        # RFC 7009 with an access token: that token alone.
        pair = await tokens_for(token, redis, redis_prefix, client)
        await token.http.post("/oauth/revoke", auth=(client.client_id, client.secret),
                              data={"token": pair["access_token"]})
        expected["revoke endpoint, access token"] = str(claims_of(pair["access_token"])["jti"])
        # Authorized apps (RevokeGrant by user and client) and an app deleted (by client).
        user = f"user-{uuid.uuid4()}"
        pair = await tokens_for(token, redis, redis_prefix, client, user_id=user)
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
            user_id=user, client_id=client.client_id))
        expected["authorized apps"] = str(claims_of(pair["access_token"])["grant_id"])
        pair = await tokens_for(token, redis, redis_prefix, client)
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
            grant_id=str(claims_of(pair["access_token"])["grant_id"])))
        expected["operator"] = str(claims_of(pair["access_token"])["grant_id"])
        # An app deleted by its owner: every grant of the app (its own app here).
        doomed = await register_client(registry)
        pair = await tokens_for(token, redis, redis_prefix, doomed)
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(client_id=doomed.client_id))
        expected["app deleted"] = str(claims_of(pair["access_token"])["grant_id"])
        # A rotated refresh token presented again after the retry window.
        first = await tokens_for(token, redis, redis_prefix, client)
        assert (await refresh(token.http, client, first["refresh_token"])).status_code == 200
        await pool.execute("UPDATE token.refresh_tokens SET rotated_at = rotated_at - interval"
                           " '1 hour' WHERE grant_id = $1::uuid",
                           claims_of(first["access_token"])["grant_id"])
        assert (await refresh(token.http, client, first["refresh_token"])).status_code == 400
        expected["refresh reuse"] = str(claims_of(first["access_token"])["grant_id"])
        # An authorization code replayed.
        code = await issue_code(redis, redis_prefix, client)
        exchanged = (await exchange(token.http, client, code)).json()
        assert (await exchange(token.http, client, code)).status_code == 400
        expected["code replay"] = str(claims_of(exchanged["access_token"])["grant_id"])

        await watcher.until(lambda w: set(expected.values()) <= w.ids)

    by_id = {revocation.id: revocation for revocation in watcher.revocations}
    assert by_id[expected["revoke endpoint, access token"]].kind == \
        token_pb2.REVOCATION_KIND_TOKEN
    for path, value in expected.items():
        if path != "revoke endpoint, access token":
            assert by_id[value].kind == token_pb2.REVOCATION_KIND_GRANT, path
        assert not by_id[value].snapshot, path
    cursors = [revocation.cursor for revocation in watcher.revocations]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)


async def test_a_grant_matters_until_its_newest_access_token_expires(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    first = await tokens_for(token, redis, redis_prefix, client)
    await asyncio.sleep(1.1)
    newest = (await refresh(token.http, client, first["refresh_token"])).json()
    grant_id = str(claims_of(newest["access_token"])["grant_id"])
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))

    relevant_until = await pool.fetchval(
        "SELECT relevant_until FROM token.revocation_log WHERE kind = 'grant' AND value = $1",
        grant_id)
    newest_exp = claims_of(newest["access_token"])["exp"]
    assert isinstance(newest_exp, int)
    assert relevant_until.timestamp() >= newest_exp
    # No more than the lifetime and the clock allowance beyond it: the log stays small.
    assert relevant_until.timestamp() <= newest_exp + 60 + 2


async def test_ids_follow_commit_order_not_statement_order(
        pool: asyncpg.Pool, database_url: str) -> None:
    """Two revoking transactions: the one that revokes first commits last. A subscriber that
    has seen the first commit's id must not miss the second: its id is larger."""
    grants = [uuid.uuid4(), uuid.uuid4()]
    for grant_id in grants:
        await pool.execute(
            "INSERT INTO token.grants (grant_id, user_id, client_id, scopes, code_hash,"
            " expires_at) VALUES ($1, 'order-user', 'order-client', '{}', $2,"
            " now() + interval '1 day')", grant_id, grant_id.bytes)
    early = await asyncpg.connect(database_url)
    late = await asyncpg.connect(database_url)
    try:
        early_tx = early.transaction()
        await early_tx.start()
        await early.execute("UPDATE token.grants SET revoked_at = now() WHERE grant_id = $1",
                            grants[0])
        async with late.transaction():
            await late.execute("UPDATE token.grants SET revoked_at = now() WHERE grant_id = $1",
                               grants[1])
        await early_tx.commit()
    finally:
        await early.close()
        await late.close()
    ids = {row["value"]: row["id"] for row in await pool.fetch(
        "SELECT id, value FROM token.revocation_log WHERE value = any($1::text[])",
        [str(g) for g in grants])}
    assert ids[str(grants[1])] < ids[str(grants[0])]


async def test_a_tombstone_and_a_repeated_revocation_log_nothing(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = str(claims_of(pair["access_token"])["grant_id"])
    before = await log_head(pool)
    for _ in range(2):
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))
    # A code replayed before any exchange leaves a tombstone: no grant, nothing to stream.
    code = await issue_code(redis, redis_prefix, client)
    result = await token.components.store.revoke_replayed_code(
        code_hash=credentials.sha256(code), presented_by=client.client_id,
        origin=Origin.of(None))
    assert result.revoked == 0  # the tombstone
    rows = await pool.fetch("SELECT value FROM token.revocation_log WHERE id > $1", before)
    assert [row["value"] for row in rows] == [grant_id]


@pytest.mark.parametrize("case", ["none", "future", "purged"],
                         ids=["no cursor: snapshot", "a cursor never issued: snapshot",
                              "a cursor below the purge horizon: snapshot"])
async def test_snapshot_when_the_cursor_cannot_be_resumed(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, case: str) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = str(claims_of(pair["access_token"])["grant_id"])
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))
    head = await log_head(pool)
    cursor = {"none": 0, "future": head + 1_000_000, "purged": 1}[case]
    if case == "purged":
        await pool.execute("UPDATE token.revocation_log_horizon SET purged_through ="
                           " greatest(purged_through, 2)")

    async with watching(token.grpc_port, cursor=cursor) as watcher:
        pass

    assert watcher.synced and watcher.synced[0].snapshot
    assert watcher.synced[0].cursor >= head
    assert grant_id in {r.id for r in watcher.revocations if r.snapshot}
    # Nothing already irrelevant is sent.
    assert all(r.relevant_until.seconds > time.time() - 1 for r in watcher.revocations)


async def test_resuming_from_a_cursor_sends_only_what_follows(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    pair = await tokens_for(token, redis, redis_prefix, client)
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(
        grant_id=str(claims_of(pair["access_token"])["grant_id"])))
    cursor = await log_head(pool)
    missed = await tokens_for(token, redis, redis_prefix, client)
    missed_grant = str(claims_of(missed["access_token"])["grant_id"])
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=missed_grant))

    async with watching(token.grpc_port, cursor=cursor) as watcher:
        await watcher.until(lambda w: bool(w.heartbeats), timeout=5)

    assert not watcher.synced[0].snapshot
    assert [r.id for r in watcher.revocations] == [missed_grant]
    assert watcher.heartbeats[-1].cursor >= watcher.revocations[0].cursor


async def test_heartbeats_every_second_on_a_quiet_feed(token: TokenService,
                                                       pool: asyncpg.Pool) -> None:
    async with watching(token.grpc_port, cursor=await log_head(pool)) as watcher:
        await watcher.until(lambda w: len(w.heartbeats) >= 3, timeout=6)
    assert watcher.heartbeats[-1].cursor >= watcher.synced[0].cursor


async def test_a_revocation_on_one_replica_reaches_subscribers_of_another(
        token: TokenService, store_settings: StoreSettings, registry_address: str,
        redis: aioredis.Redis, redis_prefix: str, client: Client, pool: asyncpg.Pool) -> None:
    async with running(make_settings(store_settings, registry_address)) as other:
        async with watching(other.grpc_port, cursor=await log_head(pool)) as on_other, \
                watching(token.grpc_port, cursor=await log_head(pool)) as on_first:
            pair = await tokens_for(token, redis, redis_prefix, client)
            await token.http.post("/oauth/revoke", auth=(client.client_id, client.secret),
                                  data={"token": pair["refresh_token"]})
            grant_id = str(claims_of(pair["access_token"])["grant_id"])
            await on_other.until(lambda w: grant_id in w.ids, timeout=5)
            await on_first.until(lambda w: grant_id in w.ids, timeout=5)


async def test_a_commit_wakes_the_feed_without_waiting_for_its_poll(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool, database_url: str) -> None:
    """The notification path alone: a feed that polls only every 30 s still hears a
    revocation at once."""
    feed = RevocationFeed(database_url, RevocationLog(pool), application_name="otesse-test-feed",
                          max_subscribers=1, poll_seconds=30.0)
    task = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(10):
            while feed.head is None:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # LISTEN in place (its connection wakes one more read)
        subscription = feed.subscribe()
        pair = await tokens_for(token, redis, redis_prefix, client)
        grant_id = str(claims_of(pair["access_token"])["grant_id"])
        await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))
        heard = await subscription.take(10.0)
        assert grant_id in {entry.value for entry in heard}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_replica_restarted_under_a_subscriber_misses_nothing(
        store_settings: StoreSettings, registry_address: str, redis: aioredis.Redis,
        redis_prefix: str, client: Client, pool: asyncpg.Pool, token: TokenService) -> None:
    settings = replace(make_settings(store_settings, registry_address), grpc_port=free_port())
    async with running(settings) as replica:
        async with watching(replica.grpc_port, cursor=await log_head(pool)) as watcher:
            pass
    cursor = watcher.cursor
    # Revoked on another replica while this one is down.
    pair = await tokens_for(token, redis, redis_prefix, client)
    grant_id = str(claims_of(pair["access_token"])["grant_id"])
    await token.grpc.RevokeGrant(token_pb2.RevokeGrantRequest(grant_id=grant_id))
    async with running(settings) as replica, \
            watching(replica.grpc_port, cursor=cursor) as resumed:
        await resumed.until(lambda w: grant_id in w.ids, timeout=5)
    assert not resumed.synced[0].snapshot


async def test_subscribers_are_bounded(store_settings: StoreSettings, registry_address: str,
                                       pool: asyncpg.Pool) -> None:
    settings = replace(make_settings(store_settings, registry_address), feed_max_subscribers=2)
    async with running(settings) as service:
        head = await log_head(pool)
        before = REGISTRY.get_sample_value("otesse_token_feed_subscribers") or 0.0
        async with watching(service.grpc_port, cursor=head), \
                watching(service.grpc_port, cursor=head):
            assert REGISTRY.get_sample_value("otesse_token_feed_subscribers") == before + 2
            refused = await stream_error(service.grpc_port, token_pb2.WatchRevocationsRequest(
                cursor=head))
            assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Leaving frees the place.
        assert await stream_error(service.grpc_port, token_pb2.WatchRevocationsRequest(
            cursor=head)) == grpc.StatusCode.OK


@pytest.mark.parametrize("name", ["x" * 65, "bad\nname"], ids=[
    "fails because the subscriber name is too long", "fails because it is not printable"])
async def test_a_bad_subscriber_name_is_invalid_argument(token: TokenService,
                                                         name: str) -> None:
    status = await stream_error(token.grpc_port, token_pb2.WatchRevocationsRequest(
        subscriber=name))
    assert status == grpc.StatusCode.INVALID_ARGUMENT


def test_the_feed_is_open_to_exactly_the_callers_of_validate_token() -> None:
    """DESIGN §5: "ValidateToken … and WatchRevocations … open to every resource server";
    a resource server holds no service credential, so both are open alike, while grant
    administration stays named."""
    assert ACCESS[WATCH] == ACCESS["/otesse.auth.v1.TokenService/ValidateToken"]
    assert ACCESS["/otesse.auth.v1.TokenService/RevokeGrant"] == frozenset({"authorize", "cli"})


async def test_a_subscriber_too_slow_to_keep_up_is_cut_not_buffered() -> None:
    cut_before = REGISTRY.get_sample_value("otesse_token_feed_cut_total",
                                           {"cause": "slow"}) or 0.0
    subscription = Subscription(limit=3)
    rows = [LoggedRevocation(cursor=i, kind="grant", value=str(i), relevant_until=0.0)
            for i in range(1, 5)]
    subscription.offer(rows[:2])
    assert [r.cursor for r in await subscription.take(0.01)] == [1, 2]
    subscription.offer(rows[:3])
    subscription.offer(rows[3:])  # four pending: one past the bound
    assert subscription.cut
    assert await subscription.take(0.01) == []
    assert REGISTRY.get_sample_value("otesse_token_feed_cut_total",
                                     {"cause": "slow"}) == cut_before + 1


async def test_a_cut_subscriber_stream_ends_unavailable_and_resumes(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    feed = token.components.feed
    async with watching(token.grpc_port, cursor=await log_head(pool)) as watcher:
        [subscription] = list(feed._subscribers)  # the one just opened
        subscription.end()  # as when it falls too far behind, or the replica stops
        await asyncio.wait_for(watcher.done.wait(), 2)
    assert watcher.error is not None and watcher.error.code() == grpc.StatusCode.UNAVAILABLE
    async with watching(token.grpc_port, cursor=watcher.cursor) as resumed:
        assert not resumed.synced[0].snapshot


async def test_a_stopping_replica_ends_its_streams_at_once(
        store_settings: StoreSettings, registry_address: str, pool: asyncpg.Pool) -> None:
    """A stream never ends by itself: the stop ends it (the subscriber resumes on another
    replica) instead of waiting out the stop's grace for it."""
    service_context = running(make_settings(store_settings, registry_address))
    service = await service_context.__aenter__()
    try:
        async with watching(service.grpc_port, cursor=await log_head(pool)) as watcher:
            started = time.monotonic()
            await service_context.__aexit__(None, None, None)
            stopped_in = time.monotonic() - started
            await asyncio.wait_for(watcher.done.wait(), 2)
    finally:
        if "stopped_in" not in locals():
            await service_context.__aexit__(None, None, None)
    assert watcher.error is not None
    assert watcher.error.code() == grpc.StatusCode.UNAVAILABLE
    assert stopped_in < 5


async def test_purge_forgets_what_no_longer_matters_and_raises_the_horizon(
        pool: asyncpg.Pool) -> None:
    stale = await pool.fetchval(
        "INSERT INTO token.revocation_log (id, kind, value, relevant_until)"
        " VALUES (nextval('token.revocation_log_id_seq'), 'token', 'purge-stale-jti',"
        " now() - interval '2 hours') RETURNING id")
    live = await pool.fetchval(
        "INSERT INTO token.revocation_log (id, kind, value, relevant_until)"
        " VALUES (nextval('token.revocation_log_id_seq'), 'token', 'purge-live-jti',"
        " now() + interval '1 hour') RETURNING id")

    report = await Purger(pool, access_token_ttl=3600, retry_window=10).run()

    assert report.revocation_log >= 1
    remaining = {row["id"] for row in await pool.fetch(
        "SELECT id FROM token.revocation_log WHERE id = any($1::bigint[])", [stale, live])}
    assert remaining == {live}
    assert await pool.fetchval("SELECT purged_through FROM token.revocation_log_horizon") \
        >= stale
