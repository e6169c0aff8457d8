"""Validation in the resource server's own process, with revocation seen at once: the published
keys verify the signature, and the token service's revocation feed
(``TokenService.WatchRevocations``) keeps a deny-set of revoked grants and tokens.

* **Keys**: fetched from the JWKS URL, again when a token names a ``kid`` not yet seen (a
  rotation), at most once per ``jwks_refresh_seconds`` (a flood of made-up ``kid`` values costs
  one fetch per interval).
* **Checks**: the token service's own rules (:mod:`services.common.jwt_profile`): ES256 only,
  ``typ``, every claim, ``iss``, ``aud``, ``exp``. A verified token's claims are remembered
  (a bounded LRU keyed by the SHA-256 of the token, so it holds no usable credential): a
  token checked again costs a lookup, the deny-set and the expiry, not a second verification.
* **Deny-set**: grant ids and token ids from the feed, each kept until its ``relevant_until``
  (the expiry of the newest access token it covers), then pruned: bounded by what can still
  validate. A background task subscribes, and after any disconnect resumes from its cursor
  (the revocations made meanwhile come first); a cursor the server cannot resume brings a
  snapshot of everything still relevant.
* **Fails closed**: until the first snapshot is complete, and whenever the feed has been
  silent (no revocation, heartbeat or synced marker) for more than ``stale_after`` seconds,
  every check raises :class:`TokenServiceUnavailable` (503, never 401 and never "active"): a
  revocation may have been missed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from otesse.auth.v1 import token_pb2, token_pb2_grpc
from services.common import jwt_profile, verified_tokens
from services.common.grpc_client import create_channel
from services.common.jwt_profile import TokenRejected
from services.common.settings import GrpcTlsSettings
from services.common.verified_tokens import VerifiedTokens
from services.resource_kit.validation import (
    TokenServiceUnavailable,
    ValidatedToken,
    Validation,
    check_scopes,
)

log = logging.getLogger("otesse.resource_kit.local")

# How long a subscriber waits before subscribing again, doubling while it fails.
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 1.0
# Pruning the deny-set is a scan: at most this often.
_PRUNE_SECONDS = 5.0


def _public_key(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    def coordinate(name: str) -> int:
        raw = base64.urlsafe_b64decode(str(jwk[name]) + "=" * (-len(str(jwk[name])) % 4))
        if len(raw) != 32:
            raise ValueError(name)
        return int.from_bytes(raw, "big")

    return ec.EllipticCurvePublicNumbers(coordinate("x"), coordinate("y"),
                                         ec.SECP256R1()).public_key()


class LocalTokenValidator:
    def __init__(self, token_grpc_addr: str, jwks_url: str, *, issuer: str, audience: str,
                 stale_after: float = 5.0, cache_entries: int = 10_000,
                 jwks_refresh_seconds: float = 10.0, timeout: float = 3.0,
                 tls: GrpcTlsSettings | None = None, subscriber: str = "resource-kit") -> None:
        self._issuer = issuer
        self._audience = audience
        self._stale_after = stale_after
        self._jwks_url = jwks_url
        self._jwks_refresh = jwks_refresh_seconds
        self._subscriber = subscriber[:64]
        self._http = httpx.AsyncClient(timeout=timeout)
        self._channel: aio.Channel = create_channel(
            token_grpc_addr, services=("otesse.auth.v1.TokenService",), tls=tls)
        self._stub = token_pb2_grpc.TokenServiceStub(self._channel)
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._keys_fetched_at = float("-inf")
        self._keys_lock = asyncio.Lock()
        self._verified: VerifiedTokens[ValidatedToken] = VerifiedTokens(cache_entries)
        self._denied_grants: dict[str, float] = {}
        self._denied_tokens: dict[str, float] = {}
        self._pruned_at = time.monotonic()
        self._cursor = 0
        # Monotonic time the feed last said "you are current"; -inf until the first sync.
        self._heard_at = float("-inf")
        self._synced = False
        self._syncs = 0
        self._subscriptions = 0
        self._task = asyncio.get_running_loop().create_task(self._follow())

    # -- the checks ------------------------------------------------------------------------

    @property
    def current(self) -> bool:
        """True while the deny-set is known to be complete (within ``stale_after``)."""
        return self._synced and time.monotonic() - self._heard_at <= self._stale_after

    async def validate(self, token: str, *, required_scopes: tuple[str, ...] = ()
                       ) -> Validation:
        if not self.current:
            raise TokenServiceUnavailable("the revocation feed is not current")
        key = verified_tokens.digest(token)
        validated = self._verified.get(key)
        if validated is None:
            try:
                signed = jwt_profile.parse(token)
            except TokenRejected as exc:
                return Validation(False, exc.problem)
            public_key = self._keys.get(signed.kid)
            if public_key is None:
                public_key = await self._key_after_refresh(signed.kid)
            try:
                claims = jwt_profile.verify(signed, public_key)
            except TokenRejected as exc:
                return Validation(False, exc.problem)
            validated = ValidatedToken(subject=claims.sub, client_id=claims.client_id,
                                       scopes=frozenset(claims.scopes),
                                       expires_at=claims.exp, grant_id=claims.grant_id,
                                       token_id=claims.jti)
            problem = jwt_profile.check(claims, issuer=self._issuer, audience=self._audience,
                                        now=time.time())
            if problem == "wrong_issuer_or_audience":
                return Validation(False, problem, validated)
            # Issuer and audience never change; the expiry is checked at every use below.
            self._verified.put(key, validated)
        if jwt_profile.expired(validated.expires_at, now=time.time()):
            return Validation(False, "expired", validated)
        if validated.grant_id in self._denied_grants or \
                validated.token_id in self._denied_tokens:
            return Validation(False, "revoked", validated)
        return check_scopes(validated, required_scopes)

    async def _key_after_refresh(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        async with self._keys_lock:
            if kid not in self._keys and \
                    time.monotonic() - self._keys_fetched_at >= self._jwks_refresh:
                await self._fetch_keys()
        return self._keys.get(kid)

    async def _fetch_keys(self) -> None:
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            keys = {}
            for jwk in response.json()["keys"]:
                if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and \
                        isinstance(jwk.get("kid"), str):
                    keys[jwk["kid"]] = _public_key(jwk)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise TokenServiceUnavailable(f"JWKS: {type(exc).__name__}") from None
        self._keys = keys
        self._keys_fetched_at = time.monotonic()

    # -- the feed --------------------------------------------------------------------------

    @property
    def deny_set_size(self) -> int:
        return len(self._denied_grants) + len(self._denied_tokens)

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def syncs(self) -> int:
        """How many times the feed said this validator was current after (re)subscribing: once
        it has, every revocation made while it was away is in the deny-set."""
        return self._syncs

    @property
    def subscriptions(self) -> int:
        """How many times the feed was subscribed to (reconnects included)."""
        return self._subscriptions

    async def _follow(self) -> None:
        """Subscribes until closed, resuming from the cursor after every disconnect."""
        with contextlib.suppress(TokenServiceUnavailable):
            # Keys ahead of the first token, so its check is one verification.
            async with self._keys_lock:
                await self._fetch_keys()
        retry = _RETRY_FIRST_SECONDS
        while True:
            synced_before = self._syncs
            try:
                await self._subscribe_once()
            except asyncio.CancelledError:
                raise
            except (aio.AioRpcError, TimeoutError) as exc:
                # A stream ends every connection age (30 s) or when its replica stops: routine
                # when the next subscription succeeds; worth a warning when it does not.
                name = exc.code().name if isinstance(exc, aio.AioRpcError) else "silent"
                log.log(logging.INFO if self._syncs > synced_before else logging.WARNING,
                        "revocation feed lost; resuming from the cursor",
                        extra={"error": name, "cursor": self._cursor})
            except Exception:  # noqa: BLE001 - never stop following; fail closed meanwhile
                log.exception("revocation feed failed; resuming from the cursor")
            if self._syncs > synced_before:
                # It was working: resubscribe at once (another replica, most likely).
                retry = _RETRY_FIRST_SECONDS
                continue
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX_SECONDS)

    async def _subscribe_once(self) -> None:
        self._subscriptions += 1
        call = self._stub.WatchRevocations(token_pb2.WatchRevocationsRequest(
            cursor=self._cursor, subscriber=self._subscriber))
        try:
            while True:
                # A stream silent past the bound is as good as dead: drop it and resubscribe
                # (a half-open connection would otherwise hold us forever).
                async with asyncio.timeout(self._stale_after):
                    event = await call.read()
                if not isinstance(event, token_pb2.RevocationEvent):
                    return  # the end of the stream (aio.EOF)
                self._apply(event)
        finally:
            call.cancel()

    def _apply(self, event: token_pb2.RevocationEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "revocation":
            revocation = event.revocation
            until = revocation.relevant_until.ToMicroseconds() / 1_000_000
            if revocation.kind == token_pb2.REVOCATION_KIND_GRANT:
                self._denied_grants[revocation.id] = until
            elif revocation.kind == token_pb2.REVOCATION_KIND_TOKEN:
                self._denied_tokens[revocation.id] = until
            if not revocation.snapshot:
                self._cursor = revocation.cursor
                self._heard()
        elif kind == "synced":
            self._cursor = event.synced.cursor
            self._synced = True
            self._syncs += 1
            self._heard()
        elif kind == "heartbeat":
            self._cursor = max(self._cursor, event.heartbeat.cursor)
            self._heard()
        self._prune()

    def _heard(self) -> None:
        if self._synced:
            self._heard_at = time.monotonic()

    def _prune(self, *, force: bool = False) -> None:
        """Forgets revocations past their relevance: no token they cover can validate (its
        ``exp`` is before ``relevant_until``, and an expired token is refused anyway)."""
        if not force and time.monotonic() - self._pruned_at < _PRUNE_SECONDS:
            return
        self._pruned_at = time.monotonic()
        now = time.time()
        for denied in (self._denied_grants, self._denied_tokens):
            for value in [value for value, until in denied.items() if until < now]:
                del denied[value]

    # -- the TokenValidator interface ------------------------------------------------------

    async def ping(self) -> None:
        if not self.current:
            raise TokenServiceUnavailable("the revocation feed is not current")
        async with self._keys_lock:
            await self._fetch_keys()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channel.close()
        await self._http.aclose()

