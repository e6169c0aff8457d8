"""Rate limits: token buckets in Redis, checked and taken atomically by one Lua script.

A bucket holds up to ``count`` requests and refills at ``count / seconds`` per second, so a
party may burst to the limit and then goes at the refill rate. One request may be subject to
several buckets: the script checks them all with the server's clock and, only when every bucket
has a request left, takes one from each bucket that is charged (``take=True``), in one round
trip. A bucket that is only checked (``take=False``) refuses the request when it is empty and
is charged elsewhere (the gateway checks the "client authentication failures" of an address
before forwarding, and charges it only when the token service says the client failed).

Keys are ``<prefix><service>:rate:<limit>:<sha256 of the subject>`` and always expire, once
the bucket would be full again.

Each check is one ``EVALSHA`` through the lean client (:mod:`services.common.redis_lean`): with
the limits on, as in production, every token request is checked twice (its address at the
gateway, its client in the token service), and redis-py's layers cost about 50 µs of CPU more
per command than the script itself (bench/README.md, issue #13).

Redis being slow or down must not take a service down: the check fails open (the request goes
through), the outage is logged once when it starts and once when it ends, every request let
through unchecked is counted, and after a failure Redis is not asked again for a second, so an
outage costs requests no latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from redis.exceptions import RedisError, ResponseError

from services.common.redis_lean import LeanRedis
from services.common.settings import ConfigError

# KEYS: bucket keys. ARGV: count, refill per second, "1" to take or "0" to only check, for each
# key in turn. Returns {1} when allowed, else {0, seconds until allowed (string), index of the
# empty bucket}.
_TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
local wait, empty = 0, 0
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
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
  if ARGV[3 * i] == '1' then
    local cap = tonumber(ARGV[3 * i - 2])
    local rate = tonumber(ARGV[3 * i - 1])
    redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil(cap / rate * 1000) + 1000)
  end
end
return {1}
"""

# After a failed check, Redis is left alone this long (fail open without waiting).
_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests at once, refilled at ``count / seconds`` per second."""

    count: int
    seconds: float

    @property
    def refill_per_second(self) -> float:
        return self.count / self.seconds

    @classmethod
    def parse(cls, name: str, raw: str) -> RateLimit | None:
        """``COUNT/SECONDS`` (``COUNT`` alone: per minute); ``0`` or ``off``: no limit."""
        text = raw.strip().lower()
        if text in ("0", "off"):
            return None
        count, slash, seconds = text.partition("/")
        try:
            limit = cls(int(count), float(seconds) if slash else 60.0)
        except ValueError:
            limit = cls(0, 0.0)
        if limit.count < 1 or limit.seconds <= 0:
            raise ConfigError(f"{name} must be COUNT/SECONDS (e.g. 30/60) or off, got {raw!r}")
        return limit


@dataclass(frozen=True)
class Bucket:
    # Names the limit in keys and metrics: "login_ip", "token_ip", "token_client", …
    name: str
    subject: str
    limit: RateLimit
    # False: the bucket is only checked (an empty one refuses), nothing is taken from it.
    take: bool = True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    limit: str | None = None


ALLOWED = Decision(allowed=True)


class RateLimiter:
    """Token buckets of one service (``service`` names its keys and its log)."""

    def __init__(self, redis: LeanRedis, *, prefix: str, service: str, timeout: float,
                 limited: Counter, failed_open: Counter) -> None:
        self._script = redis.script(_TOKEN_BUCKET)
        self._prefix = f"{prefix}{service}:rate:"
        self._timeout = timeout
        self._limited = limited
        self._failed_open = failed_open
        self._log = logging.getLogger(f"otesse.{service}.ratelimit")
        self._skip_until = 0.0
        self._failing = False

    def _key(self, bucket: Bucket) -> str:
        # Subjects are attacker-chosen (client ids, addresses): hash them to a fixed length.
        digest = hashlib.sha256(bucket.subject.encode()).hexdigest()[:32]
        return f"{self._prefix}{bucket.name}:{digest}"

    async def take(self, buckets: Sequence[Bucket]) -> Decision:
        """Takes one request from every charged bucket, or from none when one is empty."""
        if not buckets:
            return ALLOWED
        if time.monotonic() < self._skip_until:
            self._failed_open.inc()
            return ALLOWED
        args: list[float | int] = []
        for bucket in buckets:
            args.extend((bucket.limit.count, bucket.limit.refill_per_second, int(bucket.take)))
        try:
            async with asyncio.timeout(self._timeout):
                result = await self._script(keys=[self._key(b) for b in buckets], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            # Any Redis trouble (down, slow, out of memory, read-only replica) fails open.
            return self._fail_open(exc)
        if self._failing:
            self._failing = False
            self._log.info("rate limiting resumed: Redis answers again")
        match result:
            case [1]:
                return ALLOWED
            case [0, bytes() as wait, int() as empty] if 0 < empty <= len(buckets):
                limited = buckets[empty - 1].name
                self._limited.labels(limited).inc()
                return Decision(allowed=False, retry_after=float(wait), limit=limited)
        # Not the script's answer (another server on Redis' address?): as if Redis were down.
        return self._fail_open(ResponseError("the rate-limit script's answer is malformed"))

    def _fail_open(self, exc: Exception) -> Decision:
        self._failed_open.inc()
        self._skip_until = time.monotonic() + _BACKOFF_SECONDS
        if not self._failing:
            self._failing = True
            self._log.warning("rate limiting suspended (failing open): Redis unavailable",
                              extra={"error": type(exc).__name__})
        return ALLOWED
