"""Public keys as JWKs (RFC 7517, RFC 7518 §6.2.1 for P-256) with RFC 7638 thumbprint ``kid``s."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec


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


def public_key_of(jwk: Mapping[str, str]) -> ec.EllipticCurvePublicKey:
    def coordinate(value: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    return ec.EllipticCurvePublicNumbers(coordinate(jwk["x"]), coordinate(jwk["y"]),
                                         ec.SECP256R1()).public_key()
