"""The ports the tests and benchmarks give the servers they start (bench/ports.py)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from bench.ports import _PORTS_HIGH, _PORTS_LOW, free_port


def test_ports_come_from_below_the_range_connections_are_given() -> None:
    """A port the kernel may give an outgoing connection could be taken between the test
    choosing it and the service binding it ("Address already in use" at start-up)."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(1024 < port < ephemeral_low for port in ports)
    assert len(set(ports)) == 50


def test_a_port_in_use_is_skipped() -> None:
    """Ports are handed out in turn; the next ones, once something listens on them, are not."""
    span = _PORTS_HIGH - _PORTS_LOW + 1
    after = free_port()
    following = [_PORTS_LOW + (after - _PORTS_LOW + step) % span for step in (1, 2)]
    listeners: list[socket.socket] = []
    try:
        for port in following:
            sock = socket.socket()
            listeners.append(sock)
            with contextlib.suppress(OSError):  # already in use: as good for this test
                sock.bind(("127.0.0.1", port))
                sock.listen()
        assert free_port() not in following
    finally:
        for sock in listeners:
            sock.close()
