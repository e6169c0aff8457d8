"""The refresh retry window's sealed copy (DESIGN §2.3; RFC 9700 §4.14.2 rotation).

When a refresh token is rotated, the pair it was rotated into is stored encrypted with
AES-256-GCM under a key derived (HKDF-SHA256, RFC 5869) from the old refresh token itself.
Only hashes of refresh tokens are stored, so only the holder of the old token can read the pair
back: presenting it again within the window returns the same response, minting nothing.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"otesse refresh retry v1"


def _key(old_refresh_token: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return AESGCM(hkdf.derive(old_refresh_token.encode("utf-8")))


def seal(response: bytes, *, old_refresh_token: str, old_hash: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + _key(old_refresh_token).encrypt(nonce, response, old_hash)


def open_sealed(sealed: bytes, *, old_refresh_token: str, old_hash: bytes) -> bytes:
    """Raises ``cryptography.exceptions.InvalidTag`` if it was not sealed for this token."""
    return _key(old_refresh_token).decrypt(sealed[:12], sealed[12:], old_hash)
