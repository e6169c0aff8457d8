"""Signing keys for access tokens (RFC 7518 §3.4 ES256, RFC 7517 JWK, RFC 7638 thumbprint kid).

Keys live in Postgres so every replica signs and verifies with the same set; each replica keeps
them in memory (:class:`KeyRing`) and re-reads them every few seconds, so the validation path
never touches Postgres. Three states (DESIGN §3):

* ``next`` — published in the JWKS, signs nothing yet, so resource servers' JWKS caches hold
  it before the first token it signs reaches them;
* ``current`` — signs every new access token;
* ``previous`` — signs nothing, stays published (and accepted) until ``expires_at``: the moment
  the last token it signed has expired.

Rotation (``next`` → ``current`` → ``previous`` and a fresh ``next``) is one transaction under
an advisory lock, conditioned on the current key, so replicas rotating at once rotate once; its
``signing_key.rotated`` audit event (by the operator, or by the system when due) is written in
that transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common import audit
from services.common.audit import NOWHERE, Actor, Origin

log = logging.getLogger("otesse.token.keys")

KeyState = Literal["next", "current", "previous"]
# Session-scoped advisory lock key for rotation and bootstrap.
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"otesse-token-signing-keys").digest()[:8], "big",
                           signed=True)


class NoSigningKey(ConnectionError):
    """No current signing key is loaded yet: Postgres has not answered since start-up. A
    ``ConnectionError`` so both transports answer it as a dependency that is down (503)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638 §3: the thumbprint hashes the required members, sorted, no whitespace.
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True)
                                .encode("ascii")).digest()
    return {**jwk, "kid": _b64url(thumbprint), "use": "sig", "alg": "ES256"}


def _public_key(jwk: Mapping[str, str]) -> ec.EllipticCurvePublicKey:
    def coordinate(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    return ec.EllipticCurvePublicNumbers(coordinate(jwk["x"]), coordinate(jwk["y"]),
                                         ec.SECP256R1()).public_key()


def seal_private_key(private_key: ec.EllipticCurvePrivateKey, *, kek: bytes, kid: str) -> bytes:
    der = private_key.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, der, kid.encode("ascii"))


class NextKeyTooYoung(Exception):
    """Rotating now would sign with a key that caches of the JWKS may not hold yet."""


class WrongKek(Exception):
    """A private key does not decrypt: OTESSE_TOKEN_KEK is not the key it was sealed under."""


def open_private_key(sealed: bytes, *, kek: bytes, kid: str) -> ec.EllipticCurvePrivateKey:
    try:
        der = AESGCM(kek).decrypt(sealed[:12], sealed[12:], kid.encode("ascii"))
    except InvalidTag:
        raise WrongKek(f"signing key {kid} does not decrypt under OTESSE_TOKEN_KEK") from None
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


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


@dataclass(frozen=True)
class SigningKey:
    """A key in memory: the public half always, the private half only for the current key."""

    kid: str
    state: KeyState
    public_key: ec.EllipticCurvePublicKey
    jwk: dict[str, str]
    private_key: ec.EllipticCurvePrivateKey | None
    activated_at: datetime | None


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
    def __init__(self, pool: asyncpg.Pool) -> None:
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
    async def _insert(connection: asyncpg.pool.PoolConnectionProxy, *, state: KeyState,
                      kek: bytes) -> str:
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


class KeyRing:
    """The published keys of one replica, in memory; refreshed from Postgres in the background.

    Verification and the JWKS read only memory. A replica whose refresh fails keeps its last
    keys (and logs); a replica that never loaded any refuses to sign (503) until it does.
    """

    def __init__(self, store: KeyStore, *, kek: bytes) -> None:
        self._store = store
        self._kek = kek
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._opened: dict[str, ec.EllipticCurvePrivateKey] = {}

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def current(self) -> SigningKey:
        if self._current is None:
            raise NoSigningKey()
        return self._current

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    async def refresh(self) -> None:
        stored = await self._store.published()
        keys: dict[str, SigningKey] = {}
        current: SigningKey | None = None
        for item in stored:
            private_key = None
            if item.state == "current":
                private_key = self._opened.get(item.kid) or open_private_key(
                    item.sealed_private_key, kek=self._kek, kid=item.kid)
            try:
                public_key = _public_key(item.public_jwk)
            except (KeyError, TypeError, ValueError):
                # One unreadable published key must not take the others down with it.
                log.error("signing key has an unreadable public half", extra={"kid": item.kid})
                continue
            key = SigningKey(kid=item.kid, state=item.state, public_key=public_key,
                             jwk=item.public_jwk, private_key=private_key,
                             activated_at=item.activated_at)
            keys[item.kid] = key
            if item.state == "current":
                current = key
        self._opened = {key.kid: key.private_key for key in keys.values()
                        if key.private_key is not None}
        self._keys = keys
        order = {"next": 0, "current": 1, "previous": 2}
        self._jwks = {"keys": [key.jwk for key in sorted(keys.values(),
                                                         key=lambda k: order[k.state])]}
        if current is not None:
            self._current = current

    async def start(self, *, rotation_seconds: int, retire_after_seconds: int) -> None:
        """Bootstraps keys if the database has none, then loads them."""
        await self._store.ensure(kek=self._kek)
        await self.refresh()
        await self.rotate_if_due(rotation_seconds=rotation_seconds,
                                 retire_after_seconds=retire_after_seconds)

    async def rotate_if_due(self, *, rotation_seconds: int, retire_after_seconds: int,
                            ) -> None:
        current = self._current
        if not rotation_seconds or current is None or current.activated_at is None:
            return
        age = (datetime.now(current.activated_at.tzinfo) - current.activated_at).total_seconds()
        if age < rotation_seconds:
            return
        # The next key was published when the current one began to sign, a whole rotation
        # period ago; a younger one (after a manual rotation) waits for the next check.
        try:
            rotated = await self._store.rotate(
                kek=self._kek, retire_after_seconds=retire_after_seconds,
                min_next_age_seconds=rotation_seconds / 2, actor=Actor.system(),
                expected_current=current.kid)
        except NextKeyTooYoung:
            return
        if rotated:
            log.info("signing key rotated", extra={"retired_kid": current.kid})
        await self.refresh()

    async def run(self, *, interval: float, rotation_seconds: int,
                  retire_after_seconds: int) -> None:
        """Background loop: (re)load keys, bootstrap when needed, rotate when due."""
        while True:
            await asyncio.sleep(interval)
            try:
                if not self.loaded:
                    await self.start(rotation_seconds=rotation_seconds,
                                     retire_after_seconds=retire_after_seconds)
                else:
                    await self.refresh()
                    await self.rotate_if_due(rotation_seconds=rotation_seconds,
                                             retire_after_seconds=retire_after_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving with the keys we have
                log.warning("signing keys not refreshed", extra={
                    "error": type(exc).__name__, "detail": str(exc) if isinstance(
                        exc, WrongKek) else ""})
