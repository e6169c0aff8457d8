"""The Redis client every service opens in its lifespan.

Keys always carry ``OTESSE_REDIS_PREFIX`` plus a per-service part, and always a TTL. Timeouts
are short so that a Redis outage turns into a quick 503 rather than a hung request; the
connection pool reconnects by itself when Redis returns.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from services.common.settings import StoreSettings


def create_redis(settings: StoreSettings, *, max_connections: int = 64) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url.value,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        max_connections=max_connections,
        health_check_interval=30,
        decode_responses=False,
    )


async def ping(client: aioredis.Redis) -> None:
    """Raises when Redis does not answer."""
    await client.ping()
