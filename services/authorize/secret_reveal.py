"""Showing a new client secret exactly once (DESIGN §3: the client secret is "shown once";
RFC 6819 §5.2.3.1 on protecting client secrets in transit and at rest).

Registering an app (or rotating its secret) is a POST; its answer is a redirect to a page that
shows the credentials, so reloading that page never registers a second app. Between the two,
the secret waits in Redis for at most :data:`REVEAL_TTL_SECONDS`, under
``<prefix>authorize:reveal:<sha256(session key, client id)>``, encrypted (AES-GCM) with a key
derived from the session id — which only the browser's cookie holds (Redis has its hash) — so
a read of Redis alone yields no secret. The first view takes the record (``GETDEL``): a reload,
the Back button or another tab finds nothing. The secret is never in a URL, a redirect or a log.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

REVEAL_TTL_SECONDS = 300
_KEY_LABEL = b"otesse authorize: client secret reveal v1\x00"


@dataclass(frozen=True)
class Reveal:
    client_id: str
    # Empty for a public app, which has no secret.
    client_secret: str
    # "registered" or "rotated".
    reason: str
    previous_expires_at: datetime | None = None


class RevealStore(Protocol):
    async def put(self, *, session_id: str, session_key: str, reveal: Reveal) -> None: ...

    async def take(self, *, session_id: str, session_key: str,
                   client_id: str) -> Reveal | None: ...


class RedisRevealStore:
    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:reveal:"

    def _key(self, session_key: str, client_id: str) -> str:
        digest = hashlib.sha256(f"{session_key}\x00{client_id}".encode()).hexdigest()
        return self._prefix + digest

    @staticmethod
    def _cipher(session_id: str) -> AESGCM:
        return AESGCM(hashlib.sha256(_KEY_LABEL + session_id.encode("utf-8")).digest())

    async def put(self, *, session_id: str, session_key: str, reveal: Reveal) -> None:
        plain = json.dumps({
            "secret": reveal.client_secret, "reason": reveal.reason,
            "previous_expires_at": reveal.previous_expires_at.isoformat()
            if reveal.previous_expires_at else None}).encode()
        nonce = os.urandom(12)
        sealed = nonce + self._cipher(session_id).encrypt(nonce, plain,
                                                          reveal.client_id.encode())
        await self._redis.set(self._key(session_key, reveal.client_id), sealed,
                              ex=REVEAL_TTL_SECONDS)

    async def take(self, *, session_id: str, session_key: str,
                   client_id: str) -> Reveal | None:
        """The reveal, once, for the session that made it; ``None`` ever after."""
        sealed = await self._redis.getdel(self._key(session_key, client_id))
        if not isinstance(sealed, bytes) or len(sealed) < 13:
            return None
        try:
            plain = self._cipher(session_id).decrypt(sealed[:12], sealed[12:],
                                                     client_id.encode())
        except InvalidTag:
            return None
        record = json.loads(plain)
        expires = record.get("previous_expires_at")
        return Reveal(client_id=client_id, client_secret=record["secret"],
                      reason=record["reason"],
                      previous_expires_at=datetime.fromisoformat(expires) if expires else None)
