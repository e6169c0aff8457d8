"""Which ``Host`` the gateway answers for (RFC 9110 §7.2, §15.5.20).

A request whose ``Host`` is not configured is answered ``421 Misdirected Request``: it was not
meant for this server (DNS rebinding, a stray virtual host), and nothing behind the gateway
should build absolute URLs or cookies from it. A request without ``Host`` is malformed
(RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
request message that lacks a Host header field").

Entries are ``name`` (any port) or ``name:port`` (that port only); names compare
case-insensitively; IPv6 literals are written in brackets (``[::1]``).
"""

from __future__ import annotations

from dataclasses import dataclass


class MissingHost(Exception):
    """No ``Host`` header (400)."""


class HostNotAllowed(Exception):
    """A ``Host`` this gateway does not serve (421)."""


def split_host(value: str) -> tuple[str, str | None]:
    """``("example.com", "8000")`` from ``example.com:8000``; brackets kept for IPv6."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        name, rest = value[: end + 1], value[end + 1:]
        return name, rest[1:] if rest.startswith(":") else None
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit():
        return name, port
    return value, None


@dataclass(frozen=True)
class HostAllowList:
    any_port: frozenset[str]
    exact: frozenset[str]

    @classmethod
    def of(cls, entries: tuple[str, ...]) -> HostAllowList:
        names = [split_host(entry) for entry in entries]
        return cls(any_port=frozenset(name for name, port in names if port is None),
                   exact=frozenset(f"{name}:{port}" for name, port in names if port is not None))

    def check(self, host: bytes | None) -> str:
        """The request's host (lowercased); raises when it is missing or not allowed."""
        if not host:
            raise MissingHost()
        text = host.decode("latin-1").strip().lower()
        name, port = split_host(text)
        if name in self.any_port or (port is not None and f"{name}:{port}" in self.exact):
            return text
        raise HostNotAllowed(text)
