"""Signing keys for access tokens (RFC 7518 §3.4 ES256, RFC 7517 JWK, RFC 7638 thumbprint kid).

Keys live in Postgres so every replica signs and verifies with the same set; each replica keeps
them in memory (:class:`KeyRing`) and re-reads them every few seconds, so the validation path
never touches Postgres. Three states (DESIGN §3):

* ``next`` — published in the JWKS, signs nothing yet, so resource servers' JWKS caches hold
  it before the first token it signs reaches them;
* ``current`` — signs every new access token;
* ``previous`` — signs nothing, stays published (and accepted) until ``expires_at``: the moment
  the last token it signed has expired.

Rotation (``next`` → ``current`` → ``previous`` and a fresh ``next``) is one transaction under
an advisory lock, conditioned on the current key, so replicas rotating at once rotate once; its
``signing_key.rotated`` audit event (by the operator, or by the system when due) is written in
that transaction.

The package splits by concept: :mod:`~services.token.keys.jwk` (public keys as JWKs),
:mod:`~services.token.keys.sealing` (private halves encrypted at rest),
:mod:`~services.token.keys.store` (Postgres) and :mod:`~services.token.keys.ring` (memory).
"""

from services.token.keys.jwk import public_jwk, public_key_of
from services.token.keys.ring import KeyRing, NoSigningKey, SigningKey
from services.token.keys.sealing import WrongKek, open_private_key, seal_private_key
from services.token.keys.store import KeyState, KeyStore, NextKeyTooYoung, PgKeyStore, StoredKey

__all__ = [
    "KeyRing", "KeyState", "KeyStore", "NextKeyTooYoung", "NoSigningKey", "PgKeyStore",
    "SigningKey", "StoredKey", "WrongKek", "open_private_key", "public_jwk", "public_key_of",
    "seal_private_key",
]
