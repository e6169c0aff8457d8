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
``MULTI``/``EXEC``, so the marker never claims a list it does not hold. If Redis (or, while
rebuilding, Postgres) is down, the check raises: callers answer UNAVAILABLE / 503, never
"active". Redis must not evict keys (``maxmemory-policy noeviction``).

A revocation is written to Postgres first, then here. Should that second write fail (Redis
unreachable but not emptied, so the marker survives), the caller gets 503 and may retry, and
every replica also re-asserts recent revocations from Postgres in the background
(:meth:`DenyList.run`): since the first failed write of this replica, and at least over the last
:data:`SYNC_LOOKBACK_SECONDS`, so a revocation accepted by a replica that died meanwhile is
carried over too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from services.token.metrics import DENYLIST_REBUILDS
from services.token.settings import CLOCK_SKEW_SECONDS

log = logging.getLogger("otesse.token.denylist")
# The marker is re-asserted (by a rebuild) at least this often.
MARKER_TTL_SECONDS = 24 * 3600
# How far back the background sync re-asserts revocations from Postgres.
SYNC_LOOKBACK_SECONDS = 300


@dataclass(frozen=True)
class GrantRevocation:
    grant_id: str
    revoked_at: float  # Unix time


@dataclass(frozen=True)
class TokenRevocation:
    jti: str
    expires_at: float  # Unix time


@dataclass(frozen=True)
class Revocations:
    grants: Sequence[GrantRevocation]
    tokens: Sequence[TokenRevocation]


# Reads, from Postgres, the revocations that may still concern a live access token; with a
# Unix time, only those recorded since then.
RevocationSource = Callable[[float | None], Awaitable[Revocations]]


class DenyList:
    def __init__(self, redis: aioredis.Redis, *, redis_prefix: str, access_token_ttl: int,
                 source: RevocationSource) -> None:
        self._redis = redis
        self._base = f"{redis_prefix}token:deny:"
        self._marker = f"{self._base}complete"
        self._grant_life = access_token_ttl + CLOCK_SKEW_SECONDS
        self._source = source
        self._rebuilding = asyncio.Lock()
        # Unix time of this replica's first deny-list write that failed, until a sync succeeds.
        self._unsynced_since: float | None = None

    def _grant_key(self, grant_id: str) -> str:
        return f"{self._base}grant:{grant_id}"

    def _jti_key(self, jti: str) -> str:
        return f"{self._base}jti:{jti}"

    async def is_revoked(self, *, jti: str, grant_id: str) -> bool:
        """One round trip in the normal case; a rebuild first when the marker is missing."""
        keys = [self._jti_key(jti), self._grant_key(grant_id), self._marker]
        token_mark, grant_mark, marker = await self._redis.mget(keys)
        if marker is None:
            await self.rebuild()
            token_mark, grant_mark, marker = await self._redis.mget(keys)
        return token_mark is not None or grant_mark is not None

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
        """Adds revocations (already recorded in Postgres) to the deny-list."""
        if not revocations.grants and not revocations.tokens:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if self._queue(pipe, revocations):
                    await pipe.execute()
        except Exception:
            if self._unsynced_since is None:
                self._unsynced_since = time.time() - CLOCK_SKEW_SECONDS
            raise

    async def sync(self) -> None:
        """Re-asserts recent revocations recorded in Postgres (idempotent)."""
        failed_since = self._unsynced_since
        since = time.time() - SYNC_LOOKBACK_SECONDS
        if failed_since is not None:
            since = min(since, failed_since)
        revocations = await self._source(since)
        if revocations.grants or revocations.tokens:
            async with self._redis.pipeline(transaction=False) as pipe:
                if self._queue(pipe, revocations):
                    await pipe.execute()
        if self._unsynced_since == failed_since:
            self._unsynced_since = None

    async def run(self, *, interval: float) -> None:
        """Background loop of :meth:`sync`."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                log.warning("deny-list sync failed", extra={"error": type(exc).__name__})

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
