"""What one client may hold of a server before any request reaches the app, and the short
answers a refused connection gets (:class:`ConnectionLimits`).

Shared by every HTTP service (:func:`services.common.serve.serve_http`) and the gateway, which
sets the limits from its settings; enforced inside uvicorn's protocol by
:func:`services.common.uvicorn_patches.limited_protocol`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.common.errors import json_error

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A refused connection stays open this long for its client to read the answer (RFC 9112 §9.6).
LINGER_SECONDS = 2.0
# At most this many refused connections linger at once; beyond, they are closed at once.
MAX_LINGERING = 256


def _refusal(status: bytes, error: str, description: str, *,
             retry_after: bool = False) -> bytes:
    body = json_error(error, description)
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"cache-control: no-store\r\ncontent-length: %d\r\n" % len(body)
            + (b"retry-after: 1\r\n" if retry_after else b"")
            + b"connection: close\r\n\r\n" + body)


HEADERS_TOO_LARGE = _refusal(b"431 Request Header Fields Too Large", "invalid_request",
                              "The request headers are too large.")
HEADERS_TOO_SLOW = _refusal(b"408 Request Timeout", "invalid_request",
                             "The request headers did not arrive in time.")
SERVER_FULL = _refusal(b"503 Service Unavailable", "temporarily_unavailable",
                        "The server is busy; retry shortly.", retry_after=True)
ADDRESS_FULL = _refusal(b"429 Too Many Requests", "too_many_requests",
                         "Too many connections from your address; retry shortly.",
                         retry_after=True)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of a server before any request reaches the app (None: no limit).

    * ``max_header_bytes``: the request line plus headers, counted while they arrive (httptools
      sets no limit of its own, so without this a client can make the server hold megabytes of
      headers before the application sees any): past it, ``431``.
    * ``header_timeout``: seconds from a connection's start, or a later request's first byte,
      to the end of the request's headers: past it, ``408`` (or a silent close when nothing was
      sent). Idle time between requests is uvicorn's keep-alive timeout.
    * ``max_connections``: connections open at once; past it, ``503``.
    * ``max_connections_per_ip``: connections open at once from one peer address, except peers
      in ``unlimited_peers`` (a load balancer speaks for many clients); past it, ``429``.

    Every refusal is a short JSON answer with ``connection: close``, never an empty reply: the
    connection stops reading requests, half-closes after the answer and lingers briefly so the
    client can read it before the close (while more than ``MAX_LINGERING`` refused connections
    linger at once, it closes right after the answer instead, so refusals never pile up).
    """

    max_header_bytes: int | None = None
    header_timeout: float | None = None
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    unlimited_peers: tuple[Network, ...] = ()

