"""The signing keys in Postgres (``token.signing_keys``): bootstrap and rotation, each one
transaction under an advisory lock, so replicas doing it at once do it once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ec

from services.common import audit, db
from services.common.audit import NOWHERE, Actor, Origin
from services.token.keys.jwk import public_jwk
from services.token.keys.sealing import seal_private_key

KeyState = Literal["next", "current", "previous"]
# Session-scoped advisory lock key for rotation and bootstrap.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"otesse-token-signing-keys").digest()[:8], "big",
                           signed=True)


class NextKeyTooYoung(Exception):
    """Rotating now would sign with a key that caches of the JWKS may not hold yet."""



@dataclass(frozen=True)
class StoredKey:
    kid: str
    state: KeyState
    public_jwk: dict[str, str]
    sealed_private_key: bytes
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    expires_at: datetime | None



class KeyStore(Protocol):
    """Signing keys in Postgres. Private halves are stored only encrypted under the KEK; the
    states change only inside one locked transaction, so there is never more than one next and
    one current key, and a key is published (next) before it signs (current)."""

    async def published(self) -> list[StoredKey]: ...

    async def all(self) -> list[StoredKey]: ...

    async def ensure(self, *, kek: bytes) -> None: ...

    async def rotate(self, *, kek: bytes, retire_after_seconds: int,
                     min_next_age_seconds: float, actor: Actor, origin: Origin = NOWHERE,
                     expected_current: str | None = None) -> bool: ...


_COLUMNS = ("kid, state, public_jwk::text AS public_jwk, private_key, created_at, activated_at,"
            " retired_at, expires_at")


def _stored(row: asyncpg.Record) -> StoredKey:
    return StoredKey(kid=row["kid"], state=row["state"], public_jwk=json.loads(row["public_jwk"]),
                     sealed_private_key=row["private_key"], created_at=row["created_at"],
                     activated_at=row["activated_at"], retired_at=row["retired_at"],
                     expires_at=row["expires_at"])


class PgKeyStore:
    def __init__(self, pool: db.Queries) -> None:
        self._pool = pool

    async def published(self) -> list[StoredKey]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM token.signing_keys"
            " WHERE state IN ('next', 'current') OR expires_at > now()"
            " ORDER BY created_at DESC, kid")
        return [_stored(row) for row in rows]

    async def all(self) -> list[StoredKey]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM token.signing_keys ORDER BY created_at DESC, kid")
        return [_stored(row) for row in rows]

    @staticmethod
    async def _insert(connection: db.Connection | asyncpg.pool.PoolConnectionProxy, *,
                      state: KeyState, kek: bytes) -> str:
        private_key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(private_key.public_key())
        await connection.execute(
            "INSERT INTO token.signing_keys (kid, state, public_jwk, private_key, activated_at)"
            " VALUES ($1, $2, $3::jsonb, $4, CASE WHEN $2 = 'current' THEN now() END)",
            jwk["kid"], state, json.dumps(jwk),
            seal_private_key(private_key, kek=kek, kid=jwk["kid"]))
        return jwk["kid"]

    async def ensure(self, *, kek: bytes) -> None:
        """Creates the first current and next keys when there are none (idempotent)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            states = {row["state"] for row in await connection.fetch(
                "SELECT state FROM token.signing_keys WHERE state IN ('next', 'current')")}
            if "current" not in states:
                if "next" in states:
                    await connection.execute(
                        "UPDATE token.signing_keys SET state = 'current', activated_at = now()"
                        " WHERE state = 'next'")
                else:
                    await self._insert(connection, state="current", kek=kek)
                states = {"current"}
            if "next" not in states:
                await self._insert(connection, state="next", kek=kek)

    async def rotate(self, *, kek: bytes, retire_after_seconds: int,
                     min_next_age_seconds: float, actor: Actor, origin: Origin = NOWHERE,
                     expected_current: str | None = None) -> bool:
        """next → current → previous, plus a new next. With ``expected_current``, rotates only
        if that key is still current (replicas racing to rotate rotate once). Returns whether
        it rotated. Raises :class:`NextKeyTooYoung` when the next key has been published for
        less than ``min_next_age_seconds`` (0 forces the rotation). ``actor`` rotated it."""
        rotated = await self._rotate(kek=kek, retire_after_seconds=retire_after_seconds,
                                     min_next_age_seconds=min_next_age_seconds, actor=actor,
                                     origin=origin, expected_current=expected_current)
        if rotated:
            audit.counted("signing_key.rotated")
        return rotated

    async def _rotate(self, *, kek: bytes, retire_after_seconds: int,
                      min_next_age_seconds: float, actor: Actor, origin: Origin,
                      expected_current: str | None) -> bool:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            current = await connection.fetchval(
                "SELECT kid FROM token.signing_keys WHERE state = 'current'")
            if expected_current is not None and current != expected_current:
                return False
            # DESIGN §3: "a new key is published before it signs anything (so caches of the
            # JWKS already hold it)": every replica and every JWKS cache must have seen it.
            age = await connection.fetchval(
                "SELECT extract(epoch FROM now() - created_at)::float8 FROM token.signing_keys"
                " WHERE state = 'next'")
            if age is not None and age < min_next_age_seconds:
                raise NextKeyTooYoung(
                    f"the next key has been published for {int(age)} s only; it may sign after"
                    f" {int(min_next_age_seconds)} s (JWKS caches and replicas must hold it)")
            await connection.execute(
                "UPDATE token.signing_keys SET state = 'previous', retired_at = now(),"
                " expires_at = now() + $1::int * interval '1 second' WHERE state = 'current'",
                retire_after_seconds)
            promoted = await connection.fetchval(
                "UPDATE token.signing_keys SET state = 'current', activated_at = now()"
                " WHERE state = 'next' RETURNING kid")
            if promoted is None:
                promoted = await self._insert(connection, state="current", kek=kek)
            published = await self._insert(connection, state="next", kek=kek)
            details: dict[str, audit.DetailValue] = {
                "current_kid": promoted, "next_kid": published,
                "forced": min_next_age_seconds <= 0}
            if current is not None:
                details["retired_kid"] = current
            await audit.write(connection, audit.Event(type="signing_key.rotated", actor=actor,
                                                      origin=origin, details=details))
            return True

