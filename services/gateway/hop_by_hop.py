"""Hop-by-hop header fields, which a proxy must not forward (RFC 9110 §7.6.1).

"Intermediaries MUST parse a received Connection header field before a message is forwarded
and, for each connection-option in this field, remove any header or trailer field(s) from the
message with the same name as the connection-option, and then remove the Connection header
field itself (or replace it with the intermediary's own control options for the forwarded
message)." The fields below are hop-by-hop whether or not ``Connection`` names them.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})


def connection_options(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The options every ``Connection`` field lists (lowercase)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(option.strip().lower() for option in value.split(b","))
    return named


def strip(headers: Iterable[tuple[bytes, bytes]], *, also: frozenset[bytes] = frozenset(),
          ) -> list[tuple[bytes, bytes]]:
    """``headers`` (lowercase names) without hop-by-hop fields nor those in ``also``."""
    headers = list(headers)
    dropped = HOP_BY_HOP | also | connection_options(headers)
    return [(name, value) for name, value in headers if name not in dropped]
