"""One replica's published keys in memory (:class:`KeyRing`): what signs and verifies without
touching Postgres."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from services.common.audit import Actor
from services.common.errors import TemporarilyUnavailable
from services.token.keys.jwk import public_key_of
from services.token.keys.sealing import WrongKek, open_private_key
from services.token.keys.store import KeyState, KeyStore, NextKeyTooYoung

log = logging.getLogger("otesse.token.keys")


class NoSigningKey(TemporarilyUnavailable):
    """No current signing key is loaded yet: Postgres has not answered since start-up. Raised as
    what it means, a dependency not there yet: 503 with ``Retry-After`` over HTTP,
    ``UNAVAILABLE`` over gRPC."""

    def __init__(self) -> None:
        super().__init__("No signing key is loaded yet; retry shortly.")



@dataclass(frozen=True)
class SigningKey:
    """A key in memory: the public half always, the private half only for the current key."""

    kid: str
    state: KeyState
    public_key: ec.EllipticCurvePublicKey
    jwk: dict[str, str]
    private_key: ec.EllipticCurvePrivateKey | None
    activated_at: datetime | None



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
                public_key = public_key_of(item.public_jwk)
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
