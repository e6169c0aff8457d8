"""Shapes of the opaque credentials Otesse issues, and how they are stored.

Refresh tokens (``otesse_rt_``) and client secrets (``otesse_cs_``) are the prefix, 256 random
bits in base64url (43 characters) and a 6-character base62 CRC-32 of everything before it. The
checksum lets secret scanners recognise a real credential offline and lets the servers refuse a
mistyped one without a store lookup; it adds no secrecy. Authorization codes are 256 random bits
in base64url with no prefix (DESIGN §3). Only SHA-256 hashes of any of them are ever stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib
from typing import Literal

CredentialPrefix = Literal["otesse_rt_", "otesse_cs_"]
REFRESH_TOKEN_PREFIX: CredentialPrefix = "otesse_rt_"
CLIENT_SECRET_PREFIX: CredentialPrefix = "otesse_cs_"

_BODY_LENGTH = 43
_CHECKSUM_LENGTH = 6
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode("ascii")), _CHECKSUM_LENGTH)


def random_urlsafe(nbytes: int = 32) -> str:
    """``nbytes`` random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode("ascii")


def new_credential(prefix: CredentialPrefix) -> str:
    head = prefix + random_urlsafe(32)
    return head + _checksum(head)


def is_well_formed(value: str, prefix: CredentialPrefix) -> bool:
    """Shape and checksum only: says nothing about whether the credential is valid."""
    if len(value) != len(prefix) + _BODY_LENGTH + _CHECKSUM_LENGTH or not value.startswith(prefix):
        return False
    head, checksum = value[:-_CHECKSUM_LENGTH], value[-_CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(head), checksum)


def sha256(value: str) -> bytes:
    """The stored form of a code, token or secret."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def new_authorization_code() -> str:
    return random_urlsafe(32)


def authorization_code_key(redis_prefix: str, code: str) -> str:
    """Redis key of an authorization code record (proto ``AuthorizationCodeRecord``)."""
    return f"{redis_prefix}authorize:code:{hashlib.sha256(code.encode('utf-8')).hexdigest()}"
