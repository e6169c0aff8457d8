"""The refresh retry window's sealed copy (DESIGN §2.3; RFC 9700 §4.14.2 rotation).

When a refresh token is rotated, what it was rotated into is stored encrypted with AES-256-GCM
under a key derived (HKDF-SHA256, RFC 5869) from the old refresh token itself. Only hashes of
refresh tokens are stored, so only the holder of the old token can read it back: presenting it
again within the window returns the same response, minting nothing.

What is sealed (version 3) is the :class:`Successor`: the new refresh token and the access
token's own facts (``jti``, ``iat``), all chosen before the rotation's one statement runs, so
the copy is written by that statement. The access token is signed with
deterministic ECDSA (RFC 6979), so the retry signs the same claims into the same bytes: the same
pair. (The claims that come from the grant, ``sub`` and the scope, are read again with the
retry; a scope the client lost meanwhile is not issued again, and a signing key rotated
meanwhile signs the same claims with the new key.) Version 2, sealed by earlier releases, held
the whole response body; it still opens (:func:`open_sealed` returns the body).

The copy answers only the same request: the ``scope`` the rotating request asked for (or its
absence) is bound to it, as a digest stored in front of the ciphertext and authenticated with
it. A retry that asks for another scope cannot open it (:class:`DifferentRequest`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO_V2 = b"otesse refresh retry v2"
_INFO_V3 = b"otesse refresh retry v3"
_DIGEST_LENGTH = 16
_NONCE_LENGTH = 12


class DifferentRequest(Exception):
    """The sealed copy answers a request with another ``scope`` than this one."""


@dataclass(frozen=True)
class Successor:
    """What a rotation decided before it ran: the new refresh token and its access token's
    ``jti`` and ``iat``."""

    refresh_token: str
    jti: str
    iat: int

    def to_bytes(self) -> bytes:
        return json.dumps([self.refresh_token, self.jti, self.iat],
                          separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Successor:
        refresh_token, jti, iat = json.loads(data)
        return cls(refresh_token=str(refresh_token), jti=str(jti), iat=int(iat))


def _key(old_refresh_token: str, info: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return AESGCM(hkdf.derive(old_refresh_token.encode("utf-8")))


def _request_digest(requested_scopes: Sequence[str] | None) -> bytes:
    # No scope parameter (the grant's scope) and an explicit one are different requests; the
    # order of the scopes within one is not.
    canonical = "-" if requested_scopes is None else "+" + " ".join(sorted(set(requested_scopes)))
    return hashlib.sha256(canonical.encode("utf-8")).digest()[:_DIGEST_LENGTH]


def seal(successor: Successor, *, old_refresh_token: str, old_hash: bytes,
         requested_scopes: Sequence[str] | None) -> bytes:
    digest = _request_digest(requested_scopes)
    nonce = os.urandom(_NONCE_LENGTH)
    return digest + nonce + _key(old_refresh_token, _INFO_V3).encrypt(
        nonce, successor.to_bytes(), old_hash + digest)


def open_sealed(sealed: bytes, *, old_refresh_token: str, old_hash: bytes,
                requested_scopes: Sequence[str] | None) -> Successor | bytes:
    """The :class:`Successor` (version 3), or the whole response body an earlier release
    sealed (version 2). Raises :class:`DifferentRequest` if it answers another ``scope``, and
    ``cryptography.exceptions.InvalidTag`` if it was not sealed for this token."""
    digest = sealed[:_DIGEST_LENGTH]
    if not hmac.compare_digest(digest, _request_digest(requested_scopes)):
        raise DifferentRequest()
    nonce = sealed[_DIGEST_LENGTH:_DIGEST_LENGTH + _NONCE_LENGTH]
    ciphertext = sealed[_DIGEST_LENGTH + _NONCE_LENGTH:]
    try:
        return Successor.from_bytes(_key(old_refresh_token, _INFO_V3).decrypt(
            nonce, ciphertext, old_hash + digest))
    except InvalidTag:
        return _key(old_refresh_token, _INFO_V2).decrypt(nonce, ciphertext, old_hash + digest)
