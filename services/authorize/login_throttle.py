"""Brute-force protection for password sign-in (RFC 6819 §4.4.3.6 "Online guessing";
NIST SP 800-63B §5.2.2 "Rate limiting (throttling)"; OWASP "Slow Down Online Guessing Attacks
with Device Cookies").

Failures are counted in Redis for ``lock_seconds``, and which counters an attempt answers to
depends on where it comes from:

* from a **known device** — a browser the account's owner signed in from before (a valid
  device cookie for *this* account, :mod:`devices`) — only that device's own counter;
* from an **unknown device**, three counters: the client IP (across accounts), the account
  from that IP, and the account from every unknown device together.

Past ``slowdown_after`` failures on a counter every attempt it governs waits longer (doubling,
capped); at a counter's threshold its attempts are refused outright, even with the right
password, until the lock ends. So guessing from many IPs locks the account for unknown devices
only: its owner still signs in from a known device, and a stolen device cookie buys a thief
``device_lock_after`` guesses, no more. A success clears the counter of the device, or of the
account from that IP; it does not clear the account's count for unknown devices, which would
hand a guesser a fresh budget each time the owner signs in.

Accounts are counted by the SHA-256 of the lower-cased email whether or not such a user exists,
so a lock says nothing about which emails are registered; devices by the SHA-256 of the cookie.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from services.authorize.devices import device_key
from services.authorize.settings import LoginThrottleSettings


@dataclass(frozen=True)
class Attempt:
    email: str
    ip: str
    # The device cookie, only when it is valid for the account of ``email``.
    known_device: str | None = None


@dataclass(frozen=True)
class Verdict:
    # Seconds until the lock ends; 0 when the attempt may go ahead.
    locked_for: int
    # Seconds the attempt must wait before it is answered.
    delay: float


class LoginThrottle(Protocol):
    async def check(self, attempt: Attempt) -> Verdict: ...

    async def failed(self, attempt: Attempt) -> None: ...

    async def succeeded(self, attempt: Attempt) -> None: ...


class RedisLoginThrottle:
    def __init__(self, redis: aioredis.Redis, *, prefix: str,
                 settings: LoginThrottleSettings) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:login-failures:"
        self._settings = settings

    @staticmethod
    def _account(email: str) -> str:
        return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()

    def _counters(self, attempt: Attempt) -> list[tuple[str, int]]:
        """The Redis keys of the counters this attempt answers to, with their thresholds."""
        s = self._settings
        if attempt.known_device is not None:
            return [(f"{self._prefix}device:{device_key(attempt.known_device)}",
                     s.device_lock_after)]
        account = self._account(attempt.email)
        account_ip = hashlib.sha256(f"{account}\n{attempt.ip}".encode()).hexdigest()
        return [(f"{self._prefix}ip:{attempt.ip}", s.ip_lock_after),
                (f"{self._prefix}account-ip:{account_ip}", s.account_ip_lock_after),
                (f"{self._prefix}account:{account}", s.account_lock_after)]

    async def check(self, attempt: Attempt) -> Verdict:
        counters = self._counters(attempt)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in counters:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        counts = [int(replies[2 * i] or 0) for i in range(len(counters))]
        ttls = [int(replies[2 * i + 1]) for i in range(len(counters))]
        locked_for = max([ttl for (_, limit), count, ttl in zip(counters, counts, ttls,
                                                                  strict=True)
                          if count >= limit] + [0])
        if locked_for:
            return Verdict(locked_for=locked_for, delay=0.0)
        s = self._settings
        excess = max(counts) - s.slowdown_after
        delay = 0.0 if excess < 0 else min(s.slowdown_seconds * 2 ** excess,
                                           s.slowdown_max_seconds)
        return Verdict(locked_for=0, delay=delay)

    async def failed(self, attempt: Attempt) -> None:
        counters = self._counters(attempt)
        lock_seconds = self._settings.lock_seconds
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, _ in counters:
                pipe.incr(key)
                pipe.expire(key, lock_seconds, nx=True)
            replies = await pipe.execute()
        # The lock runs for its full length from the failure that set it.
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, (key, limit) in enumerate(counters):
                if replies[2 * index] == limit:
                    pipe.expire(key, lock_seconds)
            await pipe.execute()

    async def succeeded(self, attempt: Attempt) -> None:
        # The device's counter, or the account's from this IP: never the account's count for
        # unknown devices (see the module docstring).
        key = self._counters(attempt)[0 if attempt.known_device is not None else 1][0]
        await self._redis.delete(key)
