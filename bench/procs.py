"""What a server process holds, read from ``/proc`` (Linux): resident memory and open files.

* ``VmRSS`` of ``/proc/<pid>/status``: the pages the process has in memory now, shared
  libraries included (for a Python service, mostly its heap).
* ``/proc/<pid>/fd``: one entry per open file descriptor (sockets, pipes, files); with
  ``/proc/net/tcp``, which of them are connections to a given port (the stores).

Both read 0 for a process that is gone, so a sampler never fails mid-run; a service that died
shows as a drop to 0 and its requests as errors.
"""

from __future__ import annotations

import os
from pathlib import Path


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def rss_of(pids: dict[str, int]) -> dict[str, int]:
    """Resident KiB of each named process."""
    return {name: rss_kib(pid) for name, pid in pids.items()}


def tcp_peers() -> dict[int, int]:
    """Socket inode → remote port, for every TCP socket of this network namespace
    (``/proc/net/tcp`` and ``tcp6``)."""
    peers: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            peers[int(fields[9])] = int(fields[2].rsplit(":", 1)[1], 16)
    return peers


def sockets_to(pid: int, peers: dict[int, int], ports: dict[int, str]) -> dict[str, int]:
    """How many of ``pid``'s descriptors are TCP connections to each of ``ports`` (port →
    name, e.g. ``{5432: "postgres"}``), given :func:`tcp_peers`."""
    counts = dict.fromkeys(ports.values(), 0)
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return counts
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            port = peers.get(int(link[8:-1]))
            if port is not None and port in ports:
                counts[ports[port]] += 1
    return counts
