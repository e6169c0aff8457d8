"""Who the client is, and what the upstreams are told about it (``X-Forwarded-*``).

The gateway runs behind a load balancer, so the TCP peer is usually a proxy. ``X-Forwarded-For``
and ``X-Forwarded-Proto`` are believed only when the peer is in the trusted networks; anyone
else could write anything there. The client is the right-most address of the chain that is not
itself a trusted proxy (walking back from the peer), as RFC 7239 §5.2 describes for ``for=``.

Upstreams receive a clean set, whatever the client sent:

* ``X-Forwarded-For``: exactly one address, the client as resolved here. The gateway has done
  the trust walk, so an upstream trusts the gateway alone and reads that one entry; nothing the
  client wrote, and no load-balancer address it would have to know about, reaches it;
* ``X-Forwarded-Proto``: ``https`` when the trusted proxy says so (or the gateway's own socket
  is TLS), else ``http``;
* ``X-Forwarded-Host``: the ``Host`` the client asked for (already checked against the allow list).

``Forwarded`` and ``X-Real-IP`` from the client are dropped, so no upstream can be misled by them.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from services.gateway.settings import Network

# Request headers the gateway replaces with its own values.
REPLACED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                      b"forwarded", b"x-real-ip"})


@dataclass(frozen=True)
class Client:
    ip: str
    # "http" or "https", as the client's own connection was.
    proto: str
    # Addresses between the client and the gateway (trusted proxies, then the peer).
    via: tuple[str, ...]

    def forwarded_for(self) -> bytes:
        return self.ip.encode()


# The longest address form read here, "[" IPv6 with a zone "]:port", fits in this.
_MAX_ADDRESS = 96


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if len(text) > _MAX_ADDRESS:
        return None
    return _parsed_address(text)


# Every request parses its peer (and any forwarded chain): the same few addresses, over and
# over. Only short strings are remembered, so a client cannot fill the cache with large ones.
@functools.lru_cache(maxsize=4096)
def _parsed_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:1234"
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
             networks: tuple[Network, ...]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def resolve(peer: str | None, headers: list[tuple[bytes, bytes]], *, scheme: str,
            trusted: tuple[Network, ...]) -> Client:
    """The client behind ``peer``, believing forwarded headers only from trusted peers."""
    peer_ip = peer or "0.0.0.0"
    proto = "https" if scheme == "https" else "http"
    if not _trusted(_address(peer_ip), trusted):
        return Client(ip=peer_ip, proto=proto, via=())
    chain: list[str] = []
    forwarded_proto: bytes | None = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            chain.extend(item.strip() for item in value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto":
            # The value the nearest trusted proxy wrote is the last one.
            forwarded_proto = value.split(b",")[-1].strip().lower()
    if forwarded_proto in (b"http", b"https"):
        proto = forwarded_proto.decode()
    via = [peer_ip]
    while chain:
        candidate = chain.pop()
        address = _address(candidate)
        if address is None:
            # Garbage in the chain: stop believing it; the last trusted hop is the client.
            break
        if _trusted(address, trusted):
            via.insert(0, str(address))
            continue
        return Client(ip=str(address), proto=proto, via=tuple(via))
    # Every hop is a trusted proxy (or the chain is empty): the left-most one is the client.
    return Client(ip=via[0], proto=proto, via=tuple(via[1:]))
