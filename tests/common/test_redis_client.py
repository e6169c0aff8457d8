"""The shared Redis client after a Redis restart: a pooled connection that the server closed is
checked and replaced before a command is sent on it, so the first command of every path after a
restart succeeds (nothing is sent twice: the command never left on the dead connection)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from services.common.redis_client import create_redis
from services.common.settings import Env, Secret, StoreSettings
from tests.faults.stores import PrivateRedis

CONNECTIONS = 8


async def test_connections_pooled_before_a_restart_are_replaced_not_used(
        private_redis: PrivateRedis) -> None:
    settings = replace(StoreSettings.from_env(Env({})), redis_url=Secret(private_redis.url))
    client = create_redis(settings)
    try:
        # Fill the pool with several connections at once.
        await asyncio.gather(*(client.set(f"key{i}", b"v", ex=60) for i in range(CONNECTIONS)))
        pooled = len(client.connection_pool._available_connections)
        assert pooled >= 2, pooled
        private_redis.kill()  # every key and every connection gone
        private_redis.start()
        await asyncio.sleep(0.2)  # the server's closes have reached this process

        # Reads, a pipeline (the deny-list's writes) and a script (a code's consumption), each
        # on connections that were pooled before the restart.
        results = await asyncio.gather(
            *(client.get(f"key{i}") for i in range(CONNECTIONS)), return_exceptions=True)
        assert results == [None] * CONNECTIONS
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("after", b"1", ex=60)
            assert await pipe.execute() == [True]
        assert await client.eval("return redis.call('GET', KEYS[1])", 1, "after") == b"1"
    finally:
        await client.aclose()
