"""Access tokens whose signature this process has already verified (RFC 9068 §4), by digest.

Verifying an ES256 signature costs a validation several times everything else it does (about
68 µs of CPU against one Redis round trip and a few claim comparisons, bench/README.md), and a
resource server sees the same access token on every API call its client makes in the token's
hour. What a signature vouches for never changes: a token verified once needs no second
verification while the key that verified it is still trusted. So the caller remembers what the
verification gave (its claims, and the key's identity to re-check) and still checks at every
use what does change: expiry, revocation, scopes, and whether that key is still trusted.

* Keyed by the SHA-256 of the whole token (header, payload and signature): another token,
  a tampered payload or a signature lifted onto other claims is another key, verified in full.
  The cache holds no usable credential.
* Only verified tokens go in: garbage and forgeries cost their one failed verification each and
  take no room.
* Bounded: the least recently used entry goes first when it is full; ``max_entries`` of 0
  turns remembering off (every validation verifies). With ``idle_seconds``, an entry not used
  for that long is forgotten too, so what the cache holds follows the tokens in use (new
  tokens per second × the idle time), not every token seen since the process started: its
  memory is flat within a minute under steady traffic, and a leak stays visible.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def digest(token: str) -> bytes:
    """The key a token is remembered by."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class VerifiedTokens(Generic[T]):
    """A bounded LRU of what verifying a token gave, by :func:`digest`."""

    def __init__(self, max_entries: int, *, idle_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be 0 or more")
        self._max = max_entries
        self._idle = idle_seconds
        self._clock = clock
        # Least recently used first; each value with the time it was last used (kept up to
        # date only when there is an idle limit to apply).
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    def get(self, key: bytes) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._idle is not None:
            now = self._clock()
            if now - entry[0] > self._idle:
                del self._entries[key]
                return None
            self._entries[key] = (now, entry[1])
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, value: T) -> None:
        if not self._max:
            return
        now = self._clock()
        entries = self._entries
        entries[key] = (now, value)
        entries.move_to_end(key)
        if self._idle is not None:
            while entries:
                oldest, (used, _) = next(iter(entries.items()))
                if now - used <= self._idle:
                    break
                del entries[oldest]
        if len(entries) > self._max:
            entries.popitem(last=False)

    def forget(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
