"""The refresh retry window's sealed copy (DESIGN §2.3; RFC 9700 §4.14.2 rotation).

When a refresh token is rotated, the pair it was rotated into is stored encrypted with
AES-256-GCM under a key derived (HKDF-SHA256, RFC 5869) from the old refresh token itself.
Only hashes of refresh tokens are stored, so only the holder of the old token can read the pair
back: presenting it again within the window returns the same response, minting nothing.

The copy answers only the same request: the ``scope`` the rotating request asked for (or its
absence) is bound to it, as a digest stored in front of the ciphertext and authenticated with
it. A retry that asks for another scope cannot open it (:class:`DifferentRequest`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"otesse refresh retry v2"
_DIGEST_LENGTH = 16
_NONCE_LENGTH = 12


class DifferentRequest(Exception):
    """The sealed pair answers a request with another ``scope`` than this one."""


def _key(old_refresh_token: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return AESGCM(hkdf.derive(old_refresh_token.encode("utf-8")))


def _request_digest(requested_scopes: Sequence[str] | None) -> bytes:
    # No scope parameter (the grant's scope) and an explicit one are different requests; the
    # order of the scopes within one is not.
    canonical = "-" if requested_scopes is None else "+" + " ".join(sorted(set(requested_scopes)))
    return hashlib.sha256(canonical.encode("utf-8")).digest()[:_DIGEST_LENGTH]


def seal(response: bytes, *, old_refresh_token: str, old_hash: bytes,
         requested_scopes: Sequence[str] | None) -> bytes:
    digest = _request_digest(requested_scopes)
    nonce = os.urandom(_NONCE_LENGTH)
    return digest + nonce + _key(old_refresh_token).encrypt(nonce, response, old_hash + digest)


def open_sealed(sealed: bytes, *, old_refresh_token: str, old_hash: bytes,
                requested_scopes: Sequence[str] | None) -> bytes:
    """Raises :class:`DifferentRequest` if it answers another ``scope``, and
    ``cryptography.exceptions.InvalidTag`` if it was not sealed for this token."""
    digest = sealed[:_DIGEST_LENGTH]
    if not hmac.compare_digest(digest, _request_digest(requested_scopes)):
        raise DifferentRequest()
    nonce = sealed[_DIGEST_LENGTH:_DIGEST_LENGTH + _NONCE_LENGTH]
    return _key(old_refresh_token).decrypt(nonce, sealed[_DIGEST_LENGTH + _NONCE_LENGTH:],
                                           old_hash + digest)
