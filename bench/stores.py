"""How often each step of the flow goes to Redis: a short sequential sample watched with Redis
``MONITOR`` (DESIGN §8: hot paths touch each store once).

Only commands on the benchmark's own keys (``otesse-bench:…``) count, so other users of the same
Redis server do not. Commands a Lua script runs are listed as ``lua:NAME`` and are not round
trips (the ``EVALSHA`` that ran them is). ``MONITOR`` slows Redis down, which is why it watches
a separate sample and never the measurements. Postgres has no per-request counter that is
reliable over a short sample (its statistics are flushed lazily), so its share is read from its
CPU time in the measurements instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import redis.asyncio as aioredis

from bench import flow
from bench.http1 import Client
from bench.stack import REDIS_PREFIX, Stack
from otesse.auth.v1 import token_pb2_grpc
from services.common.grpc_client import create_channel

SAMPLE = 40


class _Watch:
    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()


@contextlib.asynccontextmanager
async def _monitor(redis_url: str, prefix: str) -> AsyncIterator[_Watch]:
    client = aioredis.Redis.from_url(redis_url)
    watch = _Watch()
    try:
        async with client.monitor() as monitor:

            async def listen() -> None:
                async for seen in monitor.listen():
                    words = seen["command"].split(" ", 1)
                    if len(words) == 2 and prefix in words[1]:
                        lua = "lua:" if seen["client_type"] == "lua" else ""
                        watch.commands[lua + words[0].upper()] += 1

            task = asyncio.create_task(listen())
            try:
                yield watch
                # MONITOR streams in order: once this ECHO is through, so is everything before it.
                async with aioredis.Redis.from_url(redis_url) as probe:
                    await probe.echo(f"{prefix}bench-monitor-end")
                await asyncio.sleep(0.2)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    finally:
        await client.aclose()


async def store_touches(stack: Stack, *, redis_url: str, prefix: str = REDIS_PREFIX,
                        sample: int = SAMPLE) -> dict[str, dict[str, float]]:
    """Redis commands per request on keys starting with ``prefix``, by command name, for each
    step of the flow (``sample`` requests of each, one at a time)."""

    async def _per_request(step: Callable[[int], Awaitable[None]]) -> dict[str, float]:
        async with _monitor(redis_url, prefix) as watch:
            for index in range(sample):
                await step(index)
        watch.commands.pop("ECHO", None)
        return {name: round(count / sample, 2) for name, count in sorted(watch.commands.items())}

    app = stack.app
    touches: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0) as signing_in:
        await flow.sign_in_and_consent(signing_in, person=stack.person, app=app)
        session = flow.session_cookie(signing_in)
    async with (Client(stack.gateway_url, connections=1, headers=session) as browser,
                Client(stack.gateway_url, connections=1) as api,
                Client(stack.bookings_url, connections=1) as bookings):
        codes: list[str] = []
        pairs: list[flow.Tokens] = []

        async def authorize(_: int) -> None:
            codes.append(await flow.authorize(browser, app))

        async def exchange(index: int) -> None:
            pairs.append(await flow.exchange(api, app, codes[index]))

        touches["authorize"] = await _per_request(authorize)
        touches["exchange"] = await _per_request(exchange)
        chain = [pairs[0].refresh_token]

        async def refresh(_: int) -> None:
            chain.append((await flow.refresh(api, app, chain[-1])).refresh_token)

        touches["refresh"] = await _per_request(refresh)
        channel = create_channel(stack.token_grpc, services=("otesse.auth.v1.TokenService",))
        try:
            stub = token_pb2_grpc.TokenServiceStub(channel)
            scopes = app.scope.split()

            async def validate(index: int) -> None:
                await flow.validate(stub, pairs[index].access_token, scopes)

            touches["validate (gRPC)"] = await _per_request(validate)
        finally:
            await channel.close()

        async def call_api(index: int) -> None:
            await flow.list_bookings(bookings, pairs[index].access_token)

        touches["GET /v1/bookings"] = await _per_request(call_api)
    return touches
