"""Password hashing with Argon2id (RFC 9106), a memory-hard KDF.

``verify_dummy`` spends the same time as a real verification, so that a login for an unknown
email cannot be told from a wrong password by its timing.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# RFC 9106 §4, second recommended option (64 MiB, 3 passes), at 2 lanes for small pods.
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=2)
_DUMMY_HASH = _HASHER.hash("otesse-dummy-password-for-timing")

MIN_LENGTH = 8
MAX_LENGTH = 256


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify_dummy(password: str) -> None:
    verify(_DUMMY_HASH, password)
