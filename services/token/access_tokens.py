"""Access tokens: ``otesse_at_`` + a compact JWS (RFC 7515 §7.1), a JWT profile per RFC 9068.

Header ``{"alg":"ES256","typ":"at+jwt","kid":…}`` (RFC 9068 §2.1); claims ``iss``, ``sub``,
``aud``, ``client_id``, ``scope``, ``iat``, ``exp``, ``jti`` (RFC 9068 §2.2) plus ``grant_id``.
Signed here with ``cryptography`` directly (one ES256 operation, DESIGN §8), with deterministic
ECDSA (RFC 6979): the same claims and key always give the same token, which is how a refresh
retried within its window gets back the very access token it was first answered with
(:mod:`services.token.rotation_retry`) although only the token's ``jti`` and ``iat`` are kept.
The profile's rules and the verification are :mod:`services.common.jwt_profile`, shared with
the resource kit. Tokens are not stored; their revocations are (see
:mod:`services.token.denylist`).
"""

from __future__ import annotations

import base64
import functools
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.common import credentials, jwt_profile
from services.common.jwt_profile import AccessClaims, TokenRejected
from services.token.keys import KeyRing, SigningKey

PREFIX = jwt_profile.PREFIX
MAX_TOKEN_LENGTH = jwt_profile.MAX_TOKEN_LENGTH
__all__ = ["MAX_TOKEN_LENGTH", "PREFIX", "AccessClaims", "AccessTokenIssuer", "TokenRejected",
           "new_jti", "sign", "verify", "verify_with_key"]
# RFC 6979: the nonce is derived from the key and the message, not drawn at random.
_DETERMINISTIC_ES256 = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str) -> str:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": kid}
    return _b64url(json.dumps(header, separators=(",", ":")).encode("ascii"))


class AccessTokenIssuer:
    """Mints access tokens with the ring's current key."""

    def __init__(self, ring: KeyRing, *, issuer: str, audience: str, ttl: int) -> None:
        self._ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl

    def check_ready(self) -> None:
        """Raises ``NoSigningKey`` (503) while no key can sign: before a caller writes what a
        token will be minted for, not after."""
        self._ring.current()

    def mint(self, *, user_id: str, client_id: str, scopes: tuple[str, ...], grant_id: str,
             jti: str | None = None, iat: int | None = None) -> tuple[str, AccessClaims]:
        """A new token, or, given the ``jti`` and ``iat`` of one minted before with the same
        other claims, that very token again (while the key that signed it is still the
        current one; the current key signs the same claims otherwise)."""
        now = int(time.time()) if iat is None else iat
        claims = AccessClaims(iss=self.issuer, sub=user_id, aud=self.audience,
                              client_id=client_id, scopes=scopes, iat=now, exp=now + self.ttl,
                              jti=jti or new_jti(), grant_id=grant_id)
        return sign(claims, self._ring.current()), claims


def new_jti() -> str:
    """128 random bits: an access token's unique id."""
    return credentials.random_urlsafe(16)


def sign(claims: AccessClaims, key: SigningKey) -> str:
    assert key.private_key is not None
    payload = _b64url(json.dumps(claims.payload(), separators=(",", ":")).encode("utf-8"))
    signing_input = f"{_header_segment(key.kid)}.{payload}"
    r, s = decode_dss_signature(key.private_key.sign(signing_input.encode("ascii"),
                                                     _DETERMINISTIC_ES256))
    signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{PREFIX}{signing_input}.{signature}"


def verify(token: str, ring: KeyRing) -> AccessClaims:
    """Checks shape and signature (:mod:`services.common.jwt_profile`); returns the claims
    (expiry, issuer, audience and revocation are the caller's to check). Raises
    :class:`TokenRejected`."""
    return verify_with_key(token, ring)[0]


def verify_with_key(token: str, ring: KeyRing) -> tuple[AccessClaims, SigningKey]:
    """:func:`verify`, and the key that verified the signature."""
    signed = jwt_profile.parse(token)
    key = ring.get(signed.kid)
    if key is None:
        raise TokenRejected("bad_signature")
    return jwt_profile.verify(signed, key.public_key), key
