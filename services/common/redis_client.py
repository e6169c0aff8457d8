"""The Redis client every service opens in its lifespan.

Keys always carry ``OTESSE_REDIS_PREFIX`` plus a per-service part, and always a TTL. Timeouts
are short so that a Redis outage turns into a quick 503 rather than a hung request; the
connection pool reconnects by itself when Redis returns.

A pooled connection is checked as it leaves the pool: one the server closed (a restart, a
failover) is replaced before a command is sent on it. Commands are never sent twice (the
client's retries are off): a command that may have run — a consumed code, a rate-limit take —
fails once with the outage instead.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.maint_notifications import MaintNotificationsConfig

from services.common.redis_lean import LeanRedis
from services.common.settings import Secret, StoreSettings


def create_redis(settings: StoreSettings, *, max_connections: int = 64) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url.value,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        max_connections=max_connections,
        health_check_interval=30,
        decode_responses=False,
        # The pool skips its check of a connection leaving it while maintenance notifications
        # (a Redis Enterprise feature) may be on, which redis-py assumes by default: every
        # connection pooled before a restart then failed its next command.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def create_lean(settings: StoreSettings, *, max_connections: int = 64) -> LeanRedis:
    """The hot paths' client (:mod:`services.common.redis_lean`), with the same timeouts."""
    return _lean(settings.redis_url, max_connections)


def create_rate_limit_redis(settings: StoreSettings, *, max_connections: int = 64) -> LeanRedis:
    """The rate limits' client: on ``OTESSE_RATE_LIMIT_REDIS_URL`` when it is set, else on the
    same Redis as everything else."""
    return _lean(settings.rate_limit_redis, max_connections)


def _lean(url: Secret, max_connections: int) -> LeanRedis:
    return LeanRedis.from_url(url.value, max_connections=max_connections, connect_timeout=1.0,
                              timeout=2.0)


async def ping(client: aioredis.Redis, *others: LeanRedis) -> None:
    """Raises when Redis does not answer, on any of the service's clients."""
    await client.ping()
    for other in others:
        await other.ping()
