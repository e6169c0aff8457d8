"""Proof Key for Code Exchange (RFC 7636), ``S256`` only (``plain`` is refused, DESIGN §4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: code-verifier = 43*128unreserved; unreserved = ALPHA / DIGIT / "-" / "." /
# "_" / "~"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def is_valid_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(*, verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636 §4.6: the server MUST verify the verifier against the stored challenge."""
    if method != "S256" or not is_valid_verifier(verifier):
        return False
    # Every secret comparison is constant-time (DESIGN §3).
    return hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("utf-8"))
