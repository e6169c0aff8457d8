"""A small bounded cache of positive validations, off by default.

Keyed by the SHA-256 of the token, so the cache holds no usable credential. An entry lives at
most ``ttl`` seconds and never past the token's own expiry; the least recently used entry goes
first when the cache is full.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from services.resource_kit.validation import ValidatedToken


class PositiveCache:
    def __init__(self, *, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[float, ValidatedToken]] = OrderedDict()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def get(self, token: str) -> ValidatedToken | None:
        key = self._key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        deadline, validated = entry
        if time.monotonic() >= deadline or time.time() >= validated.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return validated

    def put(self, token: str, validated: ValidatedToken) -> None:
        lifetime = min(self._ttl, validated.expires_at - time.time())
        if lifetime <= 0:
            return
        key = self._key(token)
        self._entries[key] = (time.monotonic() + lifetime, validated)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
