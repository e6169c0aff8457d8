"""Private halves at rest: AES-256-GCM under the key-encryption key (DESIGN §3), the ``kid`` as
associated data so a sealed key cannot be swapped under another key's id."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def seal_private_key(private_key: ec.EllipticCurvePrivateKey, *, kek: bytes, kid: str) -> bytes:
    der = private_key.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, der, kid.encode("ascii"))



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


