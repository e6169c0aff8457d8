"""The access-token profile shared by the token service and the resource kit: one token, one
verdict in both. Each rule is attacked with a token signed by a real key."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.common import jwt_profile
from services.common.jwt_profile import AccessClaims, TokenRejected

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
NOW = int(time.time())
CLAIMS = AccessClaims(iss="https://auth.otesse.com", sub="user-1", aud="https://api.otesse.com",
                      client_id="otesse_ci_1", scopes=("bookings:read",), iat=NOW,
                      exp=NOW + 600, jti="jti-1", grant_id="grant-1")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(header: dict[str, object] | None = None, payload: dict[str, object] | None = None,
          key: ec.EllipticCurvePrivateKey = KEY) -> str:
    head = b64(json.dumps(header or {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}).encode())
    body = b64(json.dumps(payload if payload is not None else CLAIMS.payload()).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), jwt_profile.ECDSA))
    return f"otesse_at_{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def verdict(value: str) -> str:
    try:
        claims = jwt_profile.verify(jwt_profile.parse(value), KEY.public_key())
    except TokenRejected as exc:
        return exc.problem
    return jwt_profile.check(claims, issuer=CLAIMS.iss, audience=CLAIMS.aud,
                             now=time.time()) or "valid"


def without(name: str) -> dict[str, object]:
    payload = CLAIMS.payload()
    del payload[name]
    return payload


@pytest.mark.parametrize(("value", "expected"), [
    (token(), "valid"),
    (token(key=OTHER), "bad_signature"),
    (token({"alg": "none", "typ": "at+jwt", "kid": "k1"}), "malformed"),
    (token({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}), "malformed"),
    (token({"alg": "ES256", "typ": "JWT", "kid": "k1"}), "malformed"),
    (token({"alg": "ES256", "typ": "at+jwt"}), "malformed"),
    (token(payload=without("grant_id")), "malformed"),
    (token(payload={**CLAIMS.payload(), "exp": "soon"}), "malformed"),
    (token(payload={**CLAIMS.payload(), "exp": True}), "malformed"),
    (token(payload=replace(CLAIMS, aud="https://other.example").payload()),
     "wrong_issuer_or_audience"),
    (token(payload=replace(CLAIMS, iss="https://impostor.example").payload()),
     "wrong_issuer_or_audience"),
    (token(payload=replace(CLAIMS, exp=NOW - 1).payload()), "expired"),
    ("otesse_at_" + "a" * 5000, "malformed"),
    ("Bearer-ish", "malformed"),
], ids=["a good token is valid", "fails because another key signed it",
        "fails because alg is none", "fails because alg is HS256",
        "fails because typ is not at+jwt", "fails because kid is missing",
        "fails because a claim is missing", "fails because exp is not a number",
        "fails because exp is a boolean", "fails because aud is another API",
        "fails because iss is another server", "fails because it expired",
        "fails because it is oversized", "fails because it is not ours"])
def test_the_profile_rules(value: str, expected: str) -> None:
    assert verdict(value) == expected


def test_an_unknown_key_is_a_bad_signature() -> None:
    with pytest.raises(TokenRejected) as refused:
        jwt_profile.verify(jwt_profile.parse(token()), None)
    assert refused.value.problem == "bad_signature"
