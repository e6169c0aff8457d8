"""Taking an authorization code from Redis exactly once (RFC 6749 §4.1.2, §10.5).

One Lua script, one round trip: it reads the code's record and, in the same atomic step,
overwrites it with a "used" marker that lives for a code's lifetime. So every presentation of a
code falls in exactly one of three cases, decided by Redis alone:

* ``taken`` — the record, to this caller only (of any number of concurrent exchanges, one);
* ``used`` — the code was taken before: a replay, which revokes what the code issued;
* ``unknown`` — never issued, or expired: nothing to revoke, so no Postgres work and no wait.

The marker is not a record (a protobuf message cannot start with its bytes), and the script never
renews it, so a used code is recognised for at most ``MARKER_SECONDS`` after its exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common import credentials
from services.common.redis_lean import LeanRedis

# A code lives 60 s (DESIGN §3); its marker as long again after the exchange, so a replay
# within the code's lifetime is always recognised, however late in it the first use came.
MARKER_SECONDS = 60
# "o" (0x6f) would be field 13 with wire type 7, which does not exist: never a valid record.
USED_MARKER = b"otesse:code-used:v1"

_CONSUME = """
local record = redis.call('GET', KEYS[1])
if not record or record == ARGV[1] then
  return record
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return record
"""

Outcome = Literal["taken", "used", "unknown"]


@dataclass(frozen=True)
class Consumed:
    outcome: Outcome
    # The serialized ``AuthorizationCodeRecord`` when ``taken``, else empty.
    record: bytes = b""


class CodeConsumer:
    def __init__(self, redis: LeanRedis, *, redis_prefix: str) -> None:
        self._prefix = redis_prefix
        self._script = redis.script(_CONSUME)

    async def consume(self, code: str) -> Consumed:
        raw = await self._script(keys=[credentials.authorization_code_key(self._prefix, code)],
                                 args=[USED_MARKER, MARKER_SECONDS])
        if not isinstance(raw, bytes):
            return Consumed("unknown")
        if raw == USED_MARKER:
            return Consumed("used")
        return Consumed("taken", raw)
