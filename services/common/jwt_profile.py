"""The access-token profile (RFC 9068), one set of rules for every place that checks a token:
the token service (``ValidateToken``, revocation, introspection) and the resource kit's local
validator, so a token a resource server accepts offline is exactly one the server would accept.

A token is ``otesse_at_`` + a compact JWS (RFC 7515 §7.1): header
``{"alg":"ES256","typ":"at+jwt","kid":…}`` (RFC 9068 §2.1), claims ``iss``, ``sub``, ``aud``,
``client_id``, ``scope``, ``iat``, ``exp``, ``jti`` (RFC 9068 §2.2) plus ``grant_id``, every
one required and typed. The signature is checked with ``cryptography`` directly (one ES256
verification, DESIGN §8); keys come from the caller (the token service's key ring, or the
published JWKS).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PREFIX = "otesse_at_"
# Far above a real token (about 600 characters); nothing larger is parsed.
MAX_TOKEN_LENGTH = 4096
ECDSA = ec.ECDSA(hashes.SHA256())

Problem = Literal["malformed", "bad_signature"]
ClaimProblem = Literal["wrong_issuer_or_audience", "expired"]


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


@dataclass(frozen=True)
class SignedToken:
    """A token whose shape and header passed, signature not yet checked."""

    kid: str
    signing_input: bytes
    signature: bytes  # DER, as cryptography verifies it
    raw_payload: bytes


def b64url_decode(segment: str) -> bytes:
    try:
        return base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_",
                                validate=True)
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed") from None


def parse(token: str) -> SignedToken:
    """Shape and header; raises :class:`TokenRejected`."""
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(PREFIX):
        raise TokenRejected("malformed")
    parts = token[len(PREFIX):].split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed")
    header_segment, payload_segment, signature_segment = parts
    raw_payload = b64url_decode(payload_segment)
    try:
        header = json.loads(b64url_decode(header_segment))
    except ValueError:
        raise TokenRejected("malformed") from None
    # RFC 9068 §4: reject tokens whose typ is not at+jwt and whose alg is not the expected one
    # ("none" included), before any key is looked at.
    if (not isinstance(header, dict) or header.get("alg") != "ES256"
            or header.get("typ") != "at+jwt" or not isinstance(header.get("kid"), str)):
        raise TokenRejected("malformed")
    raw_signature = b64url_decode(signature_segment)
    if len(raw_signature) != 64:
        raise TokenRejected("bad_signature")
    signature = encode_dss_signature(int.from_bytes(raw_signature[:32], "big"),
                                     int.from_bytes(raw_signature[32:], "big"))
    return SignedToken(kid=header["kid"],
                       signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
                       signature=signature, raw_payload=raw_payload)


def verify(signed: SignedToken, public_key: ec.EllipticCurvePublicKey | None) -> AccessClaims:
    """The claims of a token whose signature verifies with ``public_key`` (None: its ``kid`` is
    unknown); raises :class:`TokenRejected`. Issuer, audience and expiry are :func:`check`'s."""
    if public_key is None:
        raise TokenRejected("bad_signature")
    try:
        public_key.verify(signed.signature, signed.signing_input, ECDSA)
    except InvalidSignature:
        raise TokenRejected("bad_signature") from None
    try:
        payload = json.loads(signed.raw_payload)
        return AccessClaims(
            iss=_text(payload, "iss"), sub=_text(payload, "sub"), aud=_text(payload, "aud"),
            client_id=_text(payload, "client_id"),
            scopes=tuple(_text(payload, "scope").split()),
            iat=_integer(payload, "iat"), exp=_integer(payload, "exp"),
            jti=_text(payload, "jti"), grant_id=_text(payload, "grant_id"))
    except (ValueError, TypeError, AttributeError):
        raise TokenRejected("malformed") from None


def check(claims: AccessClaims, *, issuer: str, audience: str, now: float,
          ) -> ClaimProblem | None:
    """What disqualifies verified claims here, if anything (revocation and scopes aside)."""
    # RFC 9068 §4: "The resource server MUST validate that the "aud" claim contains a resource
    # indicator value corresponding to an identifier the resource server expects"; the issuer
    # MUST exactly match.
    if claims.iss != issuer or claims.aud != audience:
        return "wrong_issuer_or_audience"
    if expired(claims.exp, now=now):
        return "expired"
    return None


def expired(exp: int, *, now: float) -> bool:
    """The expiry rule alone, for claims verified earlier and checked again."""
    # RFC 9068 §4: "The current time MUST be before the time represented by the "exp" claim."
    return exp <= now


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
