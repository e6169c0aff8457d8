"""Known devices: the device cookie of OWASP's "Slow Down Online Guessing Attacks with Device
Cookies", so that guessing an account's password from elsewhere cannot lock its owner out.

After a successful sign-in the browser gets a long-lived cookie naming a device record bound to
that user. Sign-in attempts that carry a valid device cookie *for the account being signed in
to* are throttled per device only (:mod:`login_throttle`); everyone else shares the account's
budget for unknown devices, and its lock shuts out unknown devices only.

The cookie is 256 random bits; Redis keeps only its SHA-256 (``<prefix>authorize:device:<hex>``,
the user id as value, with the cookie's lifetime as TTL), so a read of Redis yields no usable
cookie. It is ``HttpOnly``, ``SameSite=Lax``, ``Secure`` unless the issuer is plain http (with
the ``__Host-`` prefix then), and it proves nothing by itself: it never signs anyone in, it only
decides which throttle an attempt with the right password answers to.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response

from services.authorize.settings import AuthorizeSettings
from services.common.credentials import random_urlsafe

_NAME = "otesse_device"
_MAX_ID_LENGTH = 64


class DeviceStore(Protocol):
    async def create(self, *, user_id: str) -> str: ...

    async def user_of(self, *, device_id: str) -> str | None: ...


def device_key(device_id: str) -> str:
    """What identifies a device outside its cookie: the SHA-256 of the id, in hex."""
    return hashlib.sha256(device_id.encode("utf-8")).hexdigest()


class RedisDeviceStore:
    def __init__(self, redis: aioredis.Redis, *, prefix: str, lifetime_seconds: int) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:device:"
        self._lifetime = lifetime_seconds

    async def create(self, *, user_id: str) -> str:
        """A new device of ``user_id``; returns the cookie value (stored nowhere)."""
        while True:
            device_id = random_urlsafe(32)
            if await self._redis.set(self._prefix + device_key(device_id), user_id,
                                     ex=self._lifetime, nx=True):
                return device_id

    async def user_of(self, *, device_id: str) -> str | None:
        """The user a device cookie belongs to, or ``None`` for an unknown or expired one."""
        if not device_id or len(device_id) > _MAX_ID_LENGTH:
            return None
        raw = await self._redis.get(self._prefix + device_key(device_id))
        if raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def cookie_name(settings: AuthorizeSettings) -> str:
    return f"__Host-{_NAME}" if settings.secure_cookies else _NAME


def from_request(request: Request, settings: AuthorizeSettings) -> str | None:
    return request.cookies.get(cookie_name(settings)) or None


def set_cookie(response: Response, device_id: str, settings: AuthorizeSettings) -> None:
    response.set_cookie(cookie_name(settings), device_id, max_age=settings.login.device_seconds,
                        path="/", httponly=True, samesite="lax",
                        secure=settings.secure_cookies)
