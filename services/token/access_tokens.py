"""Access tokens: ``otesse_at_`` + a compact JWS (RFC 7515 §7.1), a JWT profile per RFC 9068.

Header ``{"alg":"ES256","typ":"at+jwt","kid":…}`` (RFC 9068 §2.1); claims ``iss``, ``sub``,
``aud``, ``client_id``, ``scope``, ``iat``, ``exp``, ``jti`` (RFC 9068 §2.2) plus ``grant_id``.
Signed and verified with ``cryptography`` directly: one ES256 operation each (DESIGN §8).
Tokens are not stored; their revocations are (see :mod:`services.token.denylist`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from services.common import credentials
from services.token.keys import KeyRing, SigningKey

PREFIX = "otesse_at_"
# Far above a real token (about 600 characters); refuses to parse anything larger.
MAX_TOKEN_LENGTH = 4096
_ECDSA = ec.ECDSA(hashes.SHA256())

Problem = Literal["malformed", "bad_signature"]


@dataclass(frozen=True)
class AccessClaims:
    iss: str
    sub: str
    aud: str
    client_id: str
    scopes: tuple[str, ...]
    iat: int
    exp: int
    jti: str
    grant_id: str

    def payload(self) -> dict[str, object]:
        return {"iss": self.iss, "sub": self.sub, "aud": self.aud, "client_id": self.client_id,
                "scope": " ".join(self.scopes), "iat": self.iat, "exp": self.exp,
                "jti": self.jti, "grant_id": self.grant_id}


class TokenRejected(Exception):
    """The token is not one of ours: malformed, or its signature does not verify."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.problem = problem


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(segment: str) -> bytes:
    try:
        return base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_",
                                validate=True)
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed") from None


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

    def mint(self, *, user_id: str, client_id: str, scopes: tuple[str, ...],
             grant_id: str) -> tuple[str, AccessClaims]:
        now = int(time.time())
        claims = AccessClaims(iss=self.issuer, sub=user_id, aud=self.audience,
                              client_id=client_id, scopes=scopes, iat=now, exp=now + self.ttl,
                              jti=credentials.random_urlsafe(16), grant_id=grant_id)
        return sign(claims, self._ring.current()), claims


def sign(claims: AccessClaims, key: SigningKey) -> str:
    assert key.private_key is not None
    payload = _b64url(json.dumps(claims.payload(), separators=(",", ":")).encode("utf-8"))
    signing_input = f"{_header_segment(key.kid)}.{payload}"
    r, s = decode_dss_signature(key.private_key.sign(signing_input.encode("ascii"), _ECDSA))
    signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{PREFIX}{signing_input}.{signature}"


def verify(token: str, ring: KeyRing) -> AccessClaims:
    """Checks shape and signature; returns the claims (expiry, issuer, audience and revocation
    are the caller's to check). Raises :class:`TokenRejected`."""
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX):
        raise TokenRejected("malformed")
    parts = token[len(PREFIX):].split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed")
    header_segment, payload_segment, signature_segment = parts
    raw_payload = _b64url_decode(payload_segment)
    try:
        header = json.loads(_b64url_decode(header_segment))
    except ValueError:
        raise TokenRejected("malformed") from None
    # RFC 9068 §4: reject tokens whose typ is not at+jwt and whose alg is not the expected one
    # ("none" included), before any key is looked at.
    if (not isinstance(header, dict) or header.get("alg") != "ES256"
            or header.get("typ") != "at+jwt" or not isinstance(header.get("kid"), str)):
        raise TokenRejected("malformed")
    key = ring.get(header["kid"])
    if key is None:
        raise TokenRejected("bad_signature")
    raw_signature = _b64url_decode(signature_segment)
    if len(raw_signature) != 64:
        raise TokenRejected("bad_signature")
    signature = encode_dss_signature(int.from_bytes(raw_signature[:32], "big"),
                                     int.from_bytes(raw_signature[32:], "big"))
    try:
        key.public_key.verify(signature, f"{header_segment}.{payload_segment}".encode("ascii"),
                              _ECDSA)
    except InvalidSignature:
        raise TokenRejected("bad_signature") from None
    try:
        payload = json.loads(raw_payload)
        return AccessClaims(
            iss=_text(payload, "iss"), sub=_text(payload, "sub"), aud=_text(payload, "aud"),
            client_id=_text(payload, "client_id"),
            scopes=tuple(_text(payload, "scope").split()),
            iat=_integer(payload, "iat"), exp=_integer(payload, "exp"),
            jti=_text(payload, "jti"), grant_id=_text(payload, "grant_id"))
    except (ValueError, TypeError, AttributeError):
        raise TokenRejected("malformed") from None


def _text(payload: dict[str, object], name: str) -> str:
    value = payload[name] if name in payload else None
    if not isinstance(value, str):
        raise ValueError(name)
    return value


def _integer(payload: dict[str, object], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(name)
    return value
