"""Which address is the client's, behind the gateway and ingress."""

from __future__ import annotations

import ipaddress

import pytest

from services.common import client_ip as client_ips
from services.common.client_ip import client_ip

PROXIES = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
           ipaddress.ip_network("::1/128"))

CASES = [
    ("direct client, header ignored", "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
    ("trusted peer, no header", "127.0.0.1", [], "127.0.0.1"),
    ("trusted peer, one hop", "127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    ("spoofed left-most ignored", "127.0.0.1", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
    ("trusted hops skipped", "127.0.0.1", ["198.51.100.1, 10.1.2.3, 10.0.0.7"],
     "198.51.100.1"),
    ("several headers joined", "10.0.0.2", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),
    ("all hops trusted", "127.0.0.1", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),
    ("garbage hop stops the walk", "127.0.0.1", ["198.51.100.1, not-an-ip"], "127.0.0.1"),
    ("ipv6 client via ipv6 proxy", "::1", ["2001:db8::5"], "2001:db8::5"),
]


@pytest.mark.parametrize(("peer", "headers", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_client_ip(peer: str, headers: list[str], expected: str) -> None:
    assert client_ip(peer, headers, PROXIES) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("203.0.113.7:443", None),
    ("not an address", None),
    ("", None),
    # Far longer than any address: refused before it is parsed (or remembered).
    ("1" * 65, None),
    ("2001:db8::" + "0" * 60, None),
])
def test_an_address_is_parsed_once_and_nothing_else_is_one(text: str,
                                                          expected: str | None) -> None:
    for _ in range(2):
        parsed = client_ips.address(text)
        assert (None if parsed is None else str(parsed)) == expected
