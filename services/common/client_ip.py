"""The client's IP address behind proxies (RFC 7239 §5.2; the de-facto ``X-Forwarded-For``).

``X-Forwarded-For`` is believed only when the TCP peer is a trusted proxy; then the list is read
from the right, skipping trusted hops, and the first untrusted address is the client. Anything
left of it could have been written by the client itself.

Shared by the services behind the gateway that record who asked (authorize for its sign-in
throttle and the audit trail, token for the audit trail); each has its own trusted networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    candidate = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return candidate  # a malformed hop: stop at the last address we could check
        candidate = hop
        if not _trusted(hop, proxies):
            return hop
    return candidate


def of_request(request: Request, proxies: Sequence[Network]) -> str:
    """The client of an HTTP request (``"unknown"`` when the server knows no peer)."""
    peer = request.client.host if request.client else "unknown"
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), proxies)
