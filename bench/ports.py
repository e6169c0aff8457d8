"""Ports for the servers the benchmarks and the tests start on loopback.

Handed out below the kernel's ephemeral range, in turn from a random start. A port taken by
binding port 0 is an ephemeral one: between choosing it and the server binding it, any
connection this machine opens (to Postgres, to Redis, between services) may be given it, and the
server then fails to start with "Address already in use". A port below that range is never
given to a connection, and taking them in turn never hands the same one out twice in a row.
"""

from __future__ import annotations

import itertools
import secrets
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    """The first port the kernel may give an outgoing connection."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_LOW = 20000
_PORTS_HIGH = max(_PORTS_LOW + 1000, _ephemeral_low() - 1)
_next_port = itertools.count(secrets.randbelow(_PORTS_HIGH - _PORTS_LOW + 1))


def free_port() -> int:
    """A loopback port no one listens on, for a server about to start."""
    span = _PORTS_HIGH - _PORTS_LOW + 1
    for _ in range(span):
        port = _PORTS_LOW + next(_next_port) % span
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a server, or a connection in TIME_WAIT): the next one
            return port
    raise RuntimeError(f"no free port between {_PORTS_LOW} and {_PORTS_HIGH}")
