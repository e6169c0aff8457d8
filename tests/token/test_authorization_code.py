"""The authorization_code grant: single use under concurrency, and a replayed code revokes
every token issued from it (RFC 6749 §4.1.2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis

from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import credentials
from services.common.audit import NOWHERE
from services.common.errors import InvalidGrant
from services.common.redis_lean import LeanRedis
from services.token.access_tokens import AccessTokenIssuer
from services.token.client_auth import AuthenticatedClient
from services.token.codes import MARKER_SECONDS, USED_MARKER
from services.token.grants.authorization_code import AuthorizationCodeGrant
from services.token.purge import Purger
from services.token.store import GrantStore, PgGrantStore
from tests.token.conftest import (
    REDIRECT_URI,
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
    # The record is gone from Redis; only the short-lived "used" marker holds its key.
    key = credentials.authorization_code_key(redis_prefix, code)
    assert await redis.get(key) == USED_MARKER
    assert 0 < await redis.ttl(key) <= MARKER_SECONDS


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


async def test_concurrent_exchanges_of_one_code_leave_no_working_token(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        pool: asyncpg.Pool) -> None:
    code = await issue_code(redis, redis_prefix, client)
    responses = await asyncio.gather(*(exchange(token.http, client, code) for _ in range(10)))
    statuses = [response.status_code for response in responses]
    # RFC 6749 §4.1.2 denies every use after the first and revokes what the code issued: at
    # most one exchange answers with tokens (none when a replay beat its commit).
    assert statuses.count(200) <= 1 and statuses.count(400) >= 9, statuses
    assert {response.json()["error"] for response in responses
            if response.status_code == 400} == {"invalid_grant"}
    for winner in (response.json() for response in responses if response.status_code == 200):
        result = await token.grpc.ValidateToken(
            token_pb2.ValidateTokenRequest(token=winner["access_token"]))
        assert result.reason == token_pb2.VALIDATION_REASON_REVOKED
        refreshed = await refresh(token.http, client, winner["refresh_token"])
        assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")
    # The code's one row, a grant or a tombstone, is revoked.
    rows = await pool.fetch("SELECT revoked_at FROM token.grants WHERE code_hash = $1",
                            credentials.sha256(code))
    assert len(rows) == 1 and rows[0]["revoked_at"] is not None


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


# --- Races between an exchange and a replay of its code, against the real stores -----------


class CountingPool:
    """An asyncpg pool that counts the statements sent through it, and its checkouts (a
    checked-out connection counts into the same totals)."""

    def __init__(self, pool: Any, parent: CountingPool | None = None) -> None:
        self._pool = pool
        self._parent = parent
        self.statements = 0
        self.checkouts = 0

    def _count(self) -> None:
        if self._parent is not None:
            self._parent.statements += 1
        else:
            self.statements += 1

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[CountingPool]:
        self.checkouts += 1
        async with self._pool.acquire() as connection:
            yield CountingPool(connection, parent=self)

    async def execute(self, *args: Any) -> Any:
        self._count()
        return await self._pool.execute(*args)

    async def fetch(self, *args: Any) -> Any:
        self._count()
        return await self._pool.fetch(*args)

    async def fetchrow(self, *args: Any) -> Any:
        self._count()
        return await self._pool.fetchrow(*args)

    async def fetchval(self, *args: Any) -> Any:
        self._count()
        return await self._pool.fetchval(*args)


class HeldExchange(PgGrantStore):
    """The real grant store, except that ``create_grant`` stops where the test says: before
    its statement (``hold="before_insert"``), or after it inside a transaction that does not
    commit until released (``hold="before_commit"``)."""

    def __init__(self, pool: asyncpg.Pool, *, hold: str) -> None:
        super().__init__(pool, access_token_ttl=3600)
        self._held_pool = pool
        self._hold = hold
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def create_grant(self, **fields: Any) -> None:
        if self._hold == "before_insert":
            self.reached.set()
            await self.release.wait()
            await super().create_grant(**fields)
            return
        async with self._held_pool.acquire() as connection, connection.transaction():
            await PgGrantStore(cast(asyncpg.Pool, connection),
                               access_token_ttl=3600).create_grant(**fields)
            self.reached.set()
            await self.release.wait()


def grant_over(token: TokenService, lean: LeanRedis, redis_prefix: str,
               store: GrantStore) -> AuthorizationCodeGrant:
    """The service's own grant type and stores, with ``store`` for the grants."""
    settings = token.settings
    issuer = AccessTokenIssuer(token.components.ring, issuer=settings.issuer,
                               audience=settings.audience, ttl=settings.access_token_ttl)
    return AuthorizationCodeGrant(redis=lean, redis_prefix=redis_prefix, store=store,
                                  access_tokens=issuer, denylist=token.components.denylist,
                                  refresh_ttl=settings.refresh_token_ttl)


def authenticated(client: Client) -> AuthenticatedClient:
    return AuthenticatedClient(client.client_id, "confidential", SCOPES, "client_secret_post")


async def waiting_on_a_row_lock(pool: asyncpg.Pool, timeout: float = 10.0) -> bool:
    """Whether a statement of this database is blocked on the grants' rows within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO token.grants%'"):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_replay_during_the_first_exchange_waits_for_its_commit_and_revokes_it(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        lean_redis: LeanRedis,
        pool: asyncpg.Pool) -> None:
    store = HeldExchange(pool, hold="before_commit")
    code = await issue_code(redis, redis_prefix, client)
    first = asyncio.create_task(grant_over(token, lean_redis, redis_prefix, store).handle(
        {"code": code, "redirect_uri": REDIRECT_URI}, authenticated(client), NOWHERE))
    try:
        await asyncio.wait_for(store.reached.wait(), 10)
        # The first exchange has taken the code and inserted its grant, not yet committed.
        replay = asyncio.create_task(exchange(token.http, client, code))

        assert await waiting_on_a_row_lock(pool), "the replay did not wait for the exchange"
        assert not replay.done()
    finally:
        store.release.set()
    body = json.loads(await asyncio.wait_for(first, 10))
    answer = await asyncio.wait_for(replay, 10)

    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    result = await token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=body["access_token"]))
    assert result.reason == token_pb2.VALIDATION_REASON_REVOKED
    refreshed = await refresh(token.http, client, body["refresh_token"])
    assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")
    assert await pool.fetchval("SELECT revoked_at IS NOT NULL FROM token.grants"
                               " WHERE code_hash = $1", credentials.sha256(code))


async def test_a_replay_before_the_first_exchange_writes_makes_it_issue_nothing(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        lean_redis: LeanRedis,
        pool: asyncpg.Pool) -> None:
    store = HeldExchange(pool, hold="before_insert")
    user_id = f"user-{credentials.random_urlsafe(6)}"
    code = await issue_code(redis, redis_prefix, client, user_id=user_id)
    first = asyncio.create_task(grant_over(token, lean_redis, redis_prefix, store).handle(
        {"code": code, "redirect_uri": REDIRECT_URI}, authenticated(client), NOWHERE))
    try:
        await asyncio.wait_for(store.reached.wait(), 10)
        # The first exchange has taken the code and not written anything yet.
        answer = await exchange(token.http, client, code)
    finally:
        store.release.set()

    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    with pytest.raises(InvalidGrant):
        await asyncio.wait_for(first, 10)
    # The replay left a revoked tombstone in the code's place: no grant, nothing listed.
    row = await pool.fetchrow("SELECT user_id, client_id, revoked_at FROM token.grants"
                              " WHERE code_hash = $1", credentials.sha256(code))
    assert row is not None and (row["user_id"], row["client_id"]) == ("", "")
    assert row["revoked_at"] is not None
    assert await pool.fetchval("SELECT count(*) FROM token.refresh_tokens r JOIN token.grants g"
                               " USING (grant_id) WHERE g.code_hash = $1",
                               credentials.sha256(code)) == 0
    listed = await token.grpc.ListGrants(token_pb2.ListGrantsRequest(user_id=user_id))
    assert list(listed.grants) == []


async def test_a_tombstone_is_never_denied_nor_kept_past_purge(
        token: TokenService, pool: asyncpg.Pool) -> None:
    code_hash = credentials.sha256(credentials.new_authorization_code())
    store = PgGrantStore(pool, access_token_ttl=3600)

    result = await store.revoke_replayed_code(code_hash=code_hash, presented_by="attacker",
                                              origin=NOWHERE)

    assert (result.revoked, result.deny.grants) == (0, [])
    grant_id = await pool.fetchval("SELECT grant_id FROM token.grants WHERE code_hash = $1",
                                   code_hash)
    live = await store.live_revocations()
    assert str(grant_id) not in {grant.grant_id for grant in live.grants}
    await pool.execute("UPDATE token.grants SET revoked_at = now() - interval '2 hours'"
                       " WHERE code_hash = $1", code_hash)
    await Purger(pool, access_token_ttl=3600, retry_window=10).run()
    assert await pool.fetchval("SELECT count(*) FROM token.grants WHERE code_hash = $1",
                               code_hash) == 0


@pytest.mark.parametrize("presented", ["never_issued", "expired"], ids=["never issued", "expired"])
async def test_a_junk_or_expired_code_costs_no_postgres_and_no_wait(
        token: TokenService, redis: aioredis.Redis, redis_prefix: str, client: Client,
        lean_redis: LeanRedis,
        pool: asyncpg.Pool, presented: str) -> None:
    counting = CountingPool(pool)
    grant = grant_over(token, lean_redis, redis_prefix,
                       PgGrantStore(cast(asyncpg.Pool, counting), access_token_ttl=3600))
    codes = []
    for _ in range(25):
        if presented == "expired":
            code = await issue_code(redis, redis_prefix, client)
            await redis.delete(credentials.authorization_code_key(redis_prefix, code))
        else:
            code = credentials.new_authorization_code()
        codes.append(code)

    started = time.monotonic()
    for code in codes:
        with pytest.raises(InvalidGrant):
            await grant.handle({"code": code, "redirect_uri": REDIRECT_URI},
                               authenticated(client), NOWHERE)
    elapsed = time.monotonic() - started

    assert counting.statements == 0
    # One Redis round trip each; 25 waits of even 0.2 s would take 5 s.
    assert elapsed < 2.5, elapsed
