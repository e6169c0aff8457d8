"""The client's IP address behind proxies (RFC 7239 §5.2; the de-facto ``X-Forwarded-For``).

``X-Forwarded-For`` is believed only when the TCP peer is a trusted proxy; then the list is read
from the right, skipping trusted hops, and the first untrusted address is the client. Anything
left of it could have been written by the client itself.

Shared by the services behind the gateway that record who asked (authorize for its sign-in
throttle and the audit trail, token for the audit trail); each has its own trusted networks.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# The longest text form of an address (IPv6 with an IPv4 tail and a zone) fits in this.
_MAX_ADDRESS = 64


def address(text: str) -> Address | None:
    """``text`` as an IP address, or ``None`` when it is not one."""
    if len(text) > _MAX_ADDRESS:
        return None
    return _parsed(text)


# Every request parses its peer and the address it records: the same few, over and over. Only
# short strings are remembered, so no one can fill the cache with large ones.
@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(text: str, proxies: Sequence[Network]) -> bool:
    ip = address(text)
    return ip is not None and any(ip in network for network in proxies)


def client_ip(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    candidate = peer
    for hop in reversed(hops):
        if address(hop) is None:
            return candidate  # a malformed hop: stop at the last address we could check
        candidate = hop
        if not _trusted(hop, proxies):
            return hop
    return candidate


def of_request(request: Request, proxies: Sequence[Network]) -> str:
    """The client of an HTTP request (``"unknown"`` when the server knows no peer)."""
    peer = request.client.host if request.client else "unknown"
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), proxies)
