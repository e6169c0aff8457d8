"""RFC 7636: S256 only, verifier shape, and the Appendix B example."""

from __future__ import annotations

import pytest

from services.token import pkce

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc_example() -> None:
    assert pkce.s256(RFC_VERIFIER) == RFC_CHALLENGE
    assert pkce.verify(verifier=RFC_VERIFIER, challenge=RFC_CHALLENGE, method="S256")


@pytest.mark.parametrize(("verifier", "challenge", "method"), [
    (RFC_VERIFIER, RFC_CHALLENGE, "plain"),
    (RFC_VERIFIER, RFC_VERIFIER, "plain"),
    (RFC_VERIFIER, RFC_CHALLENGE, ""),
    (RFC_VERIFIER[:-1] + "l", RFC_CHALLENGE, "S256"),
    (RFC_VERIFIER, RFC_CHALLENGE[:-1], "S256"),
    ("a" * 42, pkce.s256("a" * 42), "S256"),
    ("a" * 129, pkce.s256("a" * 129), "S256"),
    ("a" * 42 + "/", pkce.s256("a" * 42 + "/"), "S256"),
], ids=["plain refused", "plain look-alike refused", "no method", "other verifier",
        "truncated challenge", "verifier too short", "verifier too long",
        "verifier outside the unreserved set"])
def test_refused(verifier: str, challenge: str, method: str) -> None:
    assert not pkce.verify(verifier=verifier, challenge=challenge, method=method)


def test_verifier_bounds() -> None:
    assert pkce.is_valid_verifier("a" * 43)
    assert pkce.is_valid_verifier("-._~" * 32)
    assert not pkce.is_valid_verifier("a" * 43 + "\n")
