"""Authorization requests waiting for the user's decision on the consent screen.

The checked request stays on the server (Redis, ``<prefix>authorize:pending:<sha256(id)>``),
bound to the session and user that saw the screen, for a few minutes. The consent form carries
only the request's random id, the session's CSRF token and the decision, so nothing the client
asked for can be changed in the browser between the screen and the decision. A pending request
is taken once (``GETDEL``): a decision cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Protocol

import redis.asyncio as aioredis

from services.authorize.authorization_request import AuthorizationRequest
from services.common.credentials import random_urlsafe

PENDING_TTL_SECONDS = 600
_MAX_ID_LENGTH = 64


class PendingStore(Protocol):
    async def put(self, *, request: AuthorizationRequest, session_key: str,
                  user_id: str) -> str: ...

    async def take(self, *, request_id: str, session_key: str,
                   user_id: str) -> AuthorizationRequest | None: ...


class RedisPendingStore:
    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}authorize:pending:"

    def _key(self, request_id: str) -> str:
        return self._prefix + hashlib.sha256(request_id.encode("utf-8")).hexdigest()

    async def put(self, *, request: AuthorizationRequest, session_key: str, user_id: str) -> str:
        request_id = random_urlsafe(24)
        record = {"request": request.to_record(), "session": session_key, "user": user_id}
        await self._redis.set(self._key(request_id), json.dumps(record), ex=PENDING_TTL_SECONDS)
        return request_id

    async def take(self, *, request_id: str, session_key: str,
                   user_id: str) -> AuthorizationRequest | None:
        """The request, once, if it was shown in this session to this user; else ``None``."""
        if not request_id or len(request_id) > _MAX_ID_LENGTH:
            return None
        raw = await self._redis.getdel(self._key(request_id))
        if raw is None:
            return None
        record = json.loads(raw)
        bound = hmac.compare_digest(record["session"], session_key) and hmac.compare_digest(
            record["user"], user_id)
        return AuthorizationRequest.from_record(record["request"]) if bound else None
