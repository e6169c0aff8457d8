"""Brute-force protection for password sign-in (RFC 6819 §4.4.3.6 "Online guessing";
NIST SP 800-63B §5.2.2 "Rate limiting (throttling)").

Failures are counted in Redis per account and per client IP, for ``lock_seconds``. Past
``slowdown_after`` failures every attempt waits longer (doubling, capped); at the lock
threshold the account (or IP) is refused outright until the lock ends, even with the right
password. Accounts are counted by the SHA-256 of the lower-cased email whether or not such a
user exists, so a lock says nothing about which emails are registered.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from services.authorize.settings import LoginThrottleSettings


@dataclass(frozen=True)
class Verdict:
    # Seconds until the lock ends; 0 when the attempt may go ahead.
    locked_for: int
    # Seconds the attempt must wait before it is answered.
    delay: float


class LoginThrottle(Protocol):
    async def check(self, *, email: str, ip: str) -> Verdict: ...

    async def failed(self, *, email: str, ip: str) -> None: ...

    async def succeeded(self, *, email: str) -> None: ...


class RedisLoginThrottle:
    def __init__(self, redis: aioredis.Redis, *, prefix: str,
                 settings: LoginThrottleSettings) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:login-failures:"
        self._settings = settings

    def _account_key(self, email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
        return f"{self._prefix}account:{digest}"

    def _ip_key(self, ip: str) -> str:
        return f"{self._prefix}ip:{ip}"

    async def check(self, *, email: str, ip: str) -> Verdict:
        account_key, ip_key = self._account_key(email), self._ip_key(ip)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(account_key)
            pipe.get(ip_key)
            pipe.ttl(account_key)
            pipe.ttl(ip_key)
            account_raw, ip_raw, account_ttl, ip_ttl = await pipe.execute()
        account, by_ip = int(account_raw or 0), int(ip_raw or 0)
        s = self._settings
        locked_for = max(account_ttl if account >= s.account_lock_after else 0,
                         ip_ttl if by_ip >= s.ip_lock_after else 0, 0)
        if locked_for:
            return Verdict(locked_for=int(locked_for), delay=0.0)
        excess = max(account, by_ip) - s.slowdown_after
        delay = 0.0 if excess < 0 else min(s.slowdown_seconds * 2 ** excess,
                                           s.slowdown_max_seconds)
        return Verdict(locked_for=0, delay=delay)

    async def failed(self, *, email: str, ip: str) -> None:
        account_key, ip_key = self._account_key(email), self._ip_key(ip)
        s = self._settings
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(account_key)
            pipe.expire(account_key, s.lock_seconds, nx=True)
            pipe.incr(ip_key)
            pipe.expire(ip_key, s.lock_seconds, nx=True)
            account, _, by_ip, _ = await pipe.execute()
        # The lock runs for its full length from the failure that set it.
        async with self._redis.pipeline(transaction=False) as pipe:
            if account == s.account_lock_after:
                pipe.expire(account_key, s.lock_seconds)
            if by_ip == s.ip_lock_after:
                pipe.expire(ip_key, s.lock_seconds)
            await pipe.execute()

    async def succeeded(self, *, email: str) -> None:
        await self._redis.delete(self._account_key(email))
