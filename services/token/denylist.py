"""The revocation deny-list in Redis: immediate revocation without Postgres on the validation
path (DESIGN §3; RFC 7009 §2 "the revocation … takes effect immediately").

Keys (all with a TTL, all under ``<OTESSE_REDIS_PREFIX>token:deny:``):

* ``grant:<grant_id>`` — every access token of a revoked grant; lives as long as the longest
  access token that grant can still have (revocation time + access-token lifetime + skew);
* ``jti:<jti>`` — one access token revoked on its own; lives until that token's ``exp``;
* ``complete`` — the marker saying the deny-list holds every revocation Postgres records.

Security promise: Postgres is the record, Redis a cache of it that can never make a revoked
token look alive. A check is one ``MGET`` of [jti key, grant key, marker]. When the marker is
missing (Redis restarted empty, flushed, or the keys were deleted), the list is rebuilt from
Postgres before answering, and the rebuilt keys and the marker are written in one
``MULTI``/``EXEC``, so the marker never claims a list it does not hold. Redis must not evict
keys (``maxmemory-policy noeviction``).

When Redis cannot answer (down, stalled past :data:`REDIS_TIMEOUT_SECONDS`, or failing), the
check asks the record instead — one indexed query, :data:`RevocationRecord` — so an outage of
the cache costs speed, not availability. Only when Postgres cannot answer either does the check
raise: callers answer UNAVAILABLE / 503, never "active".

A revocation is written to Postgres first, then here. Should that second write fail, the
revocation stands (the caller gets its answer) and this replica stops trusting Redis: every
check of this replica asks Postgres until it has re-asserted, from Postgres, every revocation
recorded since its first failure (:meth:`DenyList.sync`, retried every
:data:`RESYNC_SECONDS` until Redis takes it). Any failure to read Redis starts the same
catch-up, since other replicas may have failed to write while this one could not read. Every
replica also re-asserts recent revocations in the background (:meth:`DenyList.run`, at least
over the last :data:`SYNC_LOOKBACK_SECONDS`), so a revocation accepted by a replica that died
before it could tell Redis is carried over too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.redis_lean import LeanRedis, Reply
from services.token.metrics import DENYLIST_FALLBACKS, DENYLIST_REBUILDS
from services.token.revocations import Revocations
from services.token.settings import CLOCK_SKEW_SECONDS

log = logging.getLogger("otesse.token.denylist")
# The marker is re-asserted (by a rebuild) at least this often.
MARKER_TTL_SECONDS = 24 * 3600
# How far back the background sync re-asserts revocations from Postgres.
SYNC_LOOKBACK_SECONDS = 300
# A deny-list read slower than this counts as Redis not answering: the record is asked.
REDIS_TIMEOUT_SECONDS = 0.5
# While Redis may lack revocations, the catch-up sync is tried this often.
RESYNC_SECONDS = 0.5
# What Redis not answering looks like (a timeout is an OSError).
_REDIS_DOWN = (RedisError, OSError)


# Reads, from Postgres, the revocations that may still concern a live access token; with a
# Unix time, only those recorded since then.
RevocationSource = Callable[[float | None], Awaitable[Revocations]]


class RevocationRecord(Protocol):
    """Whether Postgres records this access token, or its grant, as revoked."""

    async def __call__(self, *, jti: str, grant_id: str) -> bool: ...


class DenyList:
    def __init__(self, redis: aioredis.Redis, *, reader: LeanRedis, redis_prefix: str,
                 access_token_ttl: int, source: RevocationSource,
                 record: RevocationRecord) -> None:
        self._redis = redis
        # The check, once per validation, goes through the hot paths' client; the writes
        # (pipelines, a transaction) through redis-py.
        self._reader = reader
        self._base = f"{redis_prefix}token:deny:"
        self._marker = f"{self._base}complete"
        self._grant_life = access_token_ttl + CLOCK_SKEW_SECONDS
        self._source = source
        self._record = record
        self._rebuilding = asyncio.Lock()
        # Unix time from which Redis may lack revocations Postgres holds (this replica failed
        # to write or read it since), until a sync succeeds. While set, checks ask Postgres.
        self._unsynced_since: float | None = None
        self._resync = asyncio.Event()

    def _grant_key(self, grant_id: str) -> str:
        return f"{self._base}grant:{grant_id}"

    def _jti_key(self, jti: str) -> str:
        return f"{self._base}jti:{jti}"

    @property
    def trusts_redis(self) -> bool:
        """False while Redis may lack a revocation: checks then ask Postgres."""
        return self._unsynced_since is None

    async def is_revoked(self, *, jti: str, grant_id: str) -> bool:
        """One Redis round trip in the normal case; a rebuild first when the marker is missing;
        one Postgres query when Redis cannot answer or may be behind."""
        if self._unsynced_since is None:
            try:
                revoked = await self._from_redis(jti, grant_id)
            except _REDIS_DOWN as exc:
                self._redis_failed("read", exc)
            else:
                if revoked is not None:
                    return revoked
        DENYLIST_FALLBACKS.inc()
        return await self._record(jti=jti, grant_id=grant_id)

    async def _from_redis(self, jti: str, grant_id: str) -> bool | None:
        """Redis's answer; None when the list had to be rebuilt and Redis then could not be
        read again. Raises when Redis does not answer; a rebuild that cannot read Postgres
        raises that error (nothing can tell the answer then)."""
        keys = [self._jti_key(jti), self._grant_key(grant_id), self._marker]
        async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
            token_mark, grant_mark, marker = await self._mget(keys)
        if marker is None:
            await self.rebuild()
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                token_mark, grant_mark, marker = await self._mget(keys)
            if marker is None:
                return None  # emptied again meanwhile: ask the record this time
        return token_mark is not None or grant_mark is not None

    async def _mget(self, keys: list[str]) -> list[Reply]:
        values = await self._reader.execute(b"MGET", *keys)
        if not isinstance(values, list) or len(values) != len(keys):
            raise RedisError("MGET answered with something other than one value per key")
        return values

    async def rebuild(self) -> None:
        async with self._rebuilding:
            if await self._redis.exists(self._marker):
                return  # another request of this replica rebuilt it meanwhile
            DENYLIST_REBUILDS.inc()
            revocations = await self._source(None)
            async with self._redis.pipeline(transaction=True) as pipe:
                self._queue(pipe, revocations)
                pipe.set(self._marker, b"1", ex=MARKER_TTL_SECONDS)
                await pipe.execute()

    async def deny(self, revocations: Revocations) -> None:
        """Adds revocations (already recorded in Postgres) to the deny-list. When Redis cannot
        take them, they stand anyway: this replica asks Postgres until it has caught up."""
        if not revocations.grants and not revocations.tokens:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if self._queue(pipe, revocations):
                    await pipe.execute()
        except _REDIS_DOWN as exc:
            self._redis_failed("write", exc)

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        if self._unsynced_since is None:
            self._unsynced_since = time.time() - CLOCK_SKEW_SECONDS
            log.warning("deny-list unreachable; checking revocations in Postgres until it "
                        "has caught up", extra={"operation": what, "error": type(exc).__name__})
        self._resync.set()

    async def sync(self) -> None:
        """Re-asserts recent revocations recorded in Postgres (idempotent)."""
        failed_since = self._unsynced_since
        since = time.time() - SYNC_LOOKBACK_SECONDS
        if failed_since is not None:
            since = min(since, failed_since)
        revocations = await self._source(since)
        async with self._redis.pipeline(transaction=False) as pipe:
            if self._queue(pipe, revocations):
                await pipe.execute()
            else:
                # Nothing to write, but Redis must answer before it is trusted again.
                await self._redis.ping()
        if failed_since is not None and self._unsynced_since == failed_since:
            self._unsynced_since = None
            log.info("deny-list caught up; checking revocations in Redis again")

    async def run(self, *, interval: float) -> None:
        """Background loop of :meth:`sync`: every ``interval``, and every
        :data:`RESYNC_SECONDS` while Redis may be behind."""
        failing = False
        while True:
            wait = RESYNC_SECONDS if self._unsynced_since is not None else interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._resync.wait()
            self._resync.clear()
            try:
                await self.sync()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                # Once per outage, not once per retry.
                if not failing:
                    log.warning("deny-list sync failed", extra={"error": type(exc).__name__})
                failing = True
            if self._unsynced_since is not None:
                await asyncio.sleep(RESYNC_SECONDS)

    def _queue(self, pipe: aioredis.client.Pipeline, revocations: Revocations) -> int:
        now = time.time()
        queued = 0
        for grant in revocations.grants:
            ttl = int(grant.revoked_at + self._grant_life - now) + 1
            if ttl > 0:
                pipe.set(self._grant_key(grant.grant_id), b"1", ex=ttl)
                queued += 1
        for token in revocations.tokens:
            ttl = int(token.expires_at + CLOCK_SKEW_SECONDS - now) + 1
            if ttl > 0:
                pipe.set(self._jti_key(token.jti), b"1", ex=ttl)
                queued += 1
        return queued
