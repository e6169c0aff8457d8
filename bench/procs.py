"""What a server process holds, read from ``/proc`` (Linux): resident memory and open files.

* ``VmRSS`` of ``/proc/<pid>/status``: the pages the process has in memory now, shared
  libraries included (for a Python service, mostly its heap).
* ``/proc/<pid>/fd``: one entry per open file descriptor (sockets, pipes, files).

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
