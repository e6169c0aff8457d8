"""Rate limits: token buckets in Redis, checked and taken atomically by one Lua script.

A bucket holds up to ``count`` requests and refills at ``count / seconds`` per second, so a
client may burst to the limit and then goes at the refill rate. One request may be subject to
several buckets (per IP and per client on ``/oauth/token``): the script checks them all with the
server's clock and takes a token from each only when every bucket has one, in one round trip.
Keys are ``<prefix>gateway:rate:<limit>:<subject>`` and expire once the bucket would be full.

Redis being slow or down must not take the gateway down: the check fails open (the request
goes through), the outage is logged once when it starts and once when it ends, every request
let through unchecked is counted (``otesse_gateway_rate_limit_fail_open_total``), and after a
failure Redis is not asked again for a second, so an outage costs requests no latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.gateway.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from services.gateway.settings import RateLimit

log = logging.getLogger("otesse.gateway.ratelimit")

# KEYS: bucket keys. ARGV: count, refill per second, for each key in turn.
# Returns {1} when allowed, else {0, seconds until allowed (string), index of the empty bucket}.
_TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local wait, empty = 0, 0
for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or ts == nil then tokens, ts = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  levels[i] = tokens
  if tokens < 1 and (1 - tokens) / rate > wait then
    wait, empty = (1 - tokens) / rate, i
  end
end
if empty > 0 then return {0, tostring(wait), empty} end
for i = 1, #KEYS do
  local cap = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 1000)
end
return {1}
"""

# After a failed check, Redis is left alone this long (fail open without waiting).
_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class Bucket:
    # Names the limit in keys and metrics: "login_ip", "token_ip", "token_client".
    name: str
    subject: str
    limit: RateLimit


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    limit: str | None = None


ALLOWED = Decision(allowed=True)


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, *, prefix: str, timeout: float) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._prefix = f"{prefix}gateway:rate:"
        self._timeout = timeout
        self._skip_until = 0.0
        self._failing = False

    def _key(self, bucket: Bucket) -> str:
        # Subjects are attacker-chosen (client ids, addresses): hash them to a fixed length.
        digest = hashlib.sha256(bucket.subject.encode()).hexdigest()[:32]
        return f"{self._prefix}{bucket.name}:{digest}"

    async def take(self, buckets: list[Bucket]) -> Decision:
        """Takes one request from every bucket, or from none when one is empty."""
        if not buckets:
            return ALLOWED
        if time.monotonic() < self._skip_until:
            RATE_LIMIT_FAIL_OPEN.inc()
            return ALLOWED
        args: list[float | int] = []
        for bucket in buckets:
            args.extend((bucket.limit.count, bucket.limit.refill_per_second))
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._script(keys=[self._key(b) for b in buckets], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            # Any Redis trouble (down, slow, out of memory, read-only replica) fails open.
            return self._fail_open(exc)
        if self._failing:
            self._failing = False
            log.info("rate limiting resumed: Redis answers again")
        if int(result[0]) == 1:
            return ALLOWED
        limited = buckets[int(result[2]) - 1].name
        RATE_LIMITED.labels(limited).inc()
        return Decision(allowed=False, retry_after=float(result[1]), limit=limited)

    def _fail_open(self, exc: Exception) -> Decision:
        RATE_LIMIT_FAIL_OPEN.inc()
        self._skip_until = time.monotonic() + _BACKOFF_SECONDS
        if not self._failing:
            self._failing = True
            log.warning("rate limiting suspended (failing open): Redis unavailable",
                        extra={"error": type(exc).__name__})
        return ALLOWED
