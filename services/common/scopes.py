"""The scope catalogue: every scope a client may request, with the sentence the consent screen
shows for it. Adding a scope is one line here."""

from __future__ import annotations

from collections.abc import Iterable

CATALOGUE: dict[str, str] = {
    "bookings:read": "See your bookings and their details",
    "bookings:write": "Create, change and cancel bookings for you",
    "customers:read": "See your customers and their contact details",
    "customers:write": "Add and update your customers",
}

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F) if c not in (0x22, 0x5C))


def is_scope_token(value: str) -> bool:
    return bool(value) and all(ch in _SCOPE_TOKEN_CHARS for ch in value)


def parse(scope: str) -> tuple[str, ...]:
    """Splits a space-delimited scope string (RFC 6749 §3.3) into tokens, order kept, no repeats.

    Raises ``ValueError`` for a malformed string (characters outside the RFC's set, tabs, or
    doubled spaces are tolerated as separators only when they are plain spaces).
    """
    tokens = [token for token in scope.split(" ") if token]
    for token in tokens:
        if not is_scope_token(token):
            raise ValueError("malformed scope")
    return tuple(dict.fromkeys(tokens))


def unknown(scopes: Iterable[str]) -> list[str]:
    """The scopes not in the catalogue."""
    return [scope for scope in scopes if scope not in CATALOGUE]


def join(scopes: Iterable[str]) -> str:
    """Canonical form: catalogue order, space-separated."""
    wanted = set(scopes)
    ordered = [scope for scope in CATALOGUE if scope in wanted]
    ordered += sorted(wanted - set(ordered))
    return " ".join(ordered)
