"""PKCE at the authorization endpoint (RFC 7636 §4.3, §4.4.1; RFC 9700 §2.1.1).

Only ``S256`` is accepted; ``plain`` would let anyone who sees the authorization request
redeem the code. A public client must send a challenge; a confidential one may, and when it
does, the token service checks the verifier.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidRequest

SUPPORTED_METHODS = ("S256",)
# RFC 7636 §4.2: code_challenge = 43*128unreserved (ALPHA / DIGIT / "-" / "." / "_" / "~")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def check(*, challenge: str | None, method: str | None, public_client: bool) -> tuple[str, str]:
    """Returns ``(challenge, method)``, both empty when none was sent, or raises."""
    if challenge is None:
        if method is not None:
            raise InvalidRequest("code_challenge_method was sent without code_challenge.")
        # RFC 9700 §2.1.1: public clients MUST use PKCE.
        if public_client:
            raise InvalidRequest("code_challenge is required for public clients (PKCE, S256).")
        return "", ""
    # RFC 7636 §4.3: a missing method means "plain", which this server does not support.
    if method is None or method not in SUPPORTED_METHODS:
        raise InvalidRequest("code_challenge_method must be S256.")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge must be 43 to 128 characters of base64url.")
    return challenge, method
