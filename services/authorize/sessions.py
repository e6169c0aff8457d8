"""Browser sessions in Redis (OWASP Session Management; RFC 6749 §10.12 relies on them for CSRF).

A session id is 256 random bits; Redis keeps only its SHA-256
(``<prefix>authorize:session:<hex>``), so a read of Redis yields no usable cookie. Every visitor
who meets a form gets an anonymous session (it carries the CSRF token); signing in replaces it
with a **new** id, so an id planted before login is worthless after it (session fixation).
A session ends after ``idle_seconds`` without use (the key's TTL, renewed by each read) or
``absolute_seconds`` after it began, whichever comes first.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Protocol

from services.common.credentials import random_urlsafe
from services.common.redis_lean import LeanRedis

_MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class Session:
    """What a session knows. ``user_id`` is ``None`` until the visitor signs in; whether
    someone *is* signed in (their account still open) is :mod:`services.authorize.signed_in`'s
    question, never this record's alone."""

    key: str  # the Redis key: the hash of the id, never the id itself
    csrf_token: str
    created_at: float
    user_id: str | None = None
    email: str | None = None
    auth_time: float | None = None


class SessionStore(Protocol):
    async def create(self, *, user_id: str | None = None, email: str | None = None,
                     auth_time: float | None = None) -> tuple[str, Session]: ...

    async def get(self, *, session_id: str) -> Session | None: ...

    async def delete(self, *, session_id: str) -> None: ...


class RedisSessionStore:
    def __init__(self, redis: LeanRedis, *, prefix: str, idle_seconds: int,
                 absolute_seconds: int) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:session:"
        self._idle = idle_seconds
        self._absolute = absolute_seconds

    def _key(self, session_id: str) -> str:
        return self._prefix + hashlib.sha256(session_id.encode("utf-8")).hexdigest()

    async def create(self, *, user_id: str | None = None, email: str | None = None,
                     auth_time: float | None = None) -> tuple[str, Session]:
        """A new session under a new random id; returns ``(id, session)``."""
        session_id = random_urlsafe(32)
        session = Session(key=self._key(session_id), csrf_token=random_urlsafe(32),
                          created_at=time.time(), user_id=user_id, email=email,
                          auth_time=auth_time)
        record = {"csrf": session.csrf_token, "created": session.created_at, "user": user_id,
                  "email": email, "auth_time": auth_time}
        await self._redis.execute(b"SET", session.key, json.dumps(record), b"EX", self._idle)
        return session_id, session

    async def get(self, *, session_id: str) -> Session | None:
        """The live session for ``session_id`` (its idle timer restarts), else ``None``."""
        if not session_id or len(session_id) > _MAX_ID_LENGTH:
            return None
        key = self._key(session_id)
        raw = await self._redis.execute(b"GETEX", key, b"EX", self._idle)
        if not isinstance(raw, bytes):
            return None
        try:
            record = json.loads(raw)
            created = float(record["created"])
            session = Session(key=key, csrf_token=str(record["csrf"]), created_at=created,
                              user_id=record.get("user"), email=record.get("email"),
                              auth_time=record.get("auth_time"))
        except (ValueError, KeyError, TypeError):
            created, session = 0.0, None  # unreadable: as good as absent
        if session is None or time.time() >= created + self._absolute:
            await self._redis.execute(b"DEL", key)
            return None
        return session

    async def delete(self, *, session_id: str) -> None:
        await self._redis.execute(b"DEL", self._key(session_id))
