"""Where a request's CPU time goes: per process, read from ``/proc`` (Linux) before and after
a measurement.

* ``client``: this process (the load generator, gRPC's threads included) and its children
  that ended (``wrk``, :mod:`bench.wrk`): it shares the machine with the servers, so its share
  is CPU the servers did not get.
* each service: its ``otesse-auth serve`` process.
* ``postgres``: the server backends connected to the benchmark database (their own work only;
  none for a server that has no database, such as the reference in ``make bench-peer``).
* ``redis``: the whole Redis server, from ``INFO cpu``; it may also serve other users of the
  same server (other test runs), so read it as an upper bound.
* ``other``: everything else the machine did meanwhile (``/proc/stat`` minus the above): below
  about 0.1 ms per request on a quiet machine; above that, something competed for the cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

_TICK = os.sysconf("SC_CLK_TCK")
Snapshot = dict[str, float]


def machine_seconds() -> float:
    """CPU seconds every core has spent busy since boot (``/proc/stat``, all but idle and
    iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted after the command name's closing parenthesis.
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    def __init__(self, *, services: dict[str, int], database_name: str | None,
                 database_url: str, redis_url: str) -> None:
        self._services = services
        self._database_name = database_name
        self._database_url = database_url
        self._redis_url = redis_url
        self._db: asyncpg.Connection | None = None
        self._redis: aioredis.Redis | None = None

    @property
    def services(self) -> dict[str, int]:
        """Service name → process id."""
        return dict(self._services)

    async def open(self) -> None:
        if self._database_name is not None:
            self._db = await asyncpg.connect(self._database_url)
        self._redis = aioredis.Redis.from_url(self._redis_url)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def snapshot(self) -> Snapshot:
        assert self._redis is not None
        ended = os.times()
        taken: Snapshot = {"client": time.process_time() + ended.children_user
                           + ended.children_system, "machine": machine_seconds()}
        for name, pid in self._services.items():
            taken[name] = process_seconds(pid)
        if self._db is not None:
            if self._db.is_closed():
                # Something ended every backend (a test of a Postgres outage on this shared
                # server): the meter reconnects rather than end the run.
                self._db = await asyncpg.connect(self._database_url)
            backends = await self._db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self._database_name)
            for row in backends:
                taken[f"pg:{row['pid']}"] = process_seconds(row["pid"])
        info = await self._redis.info("cpu")
        taken["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return taken


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU milliseconds per request for each process, Postgres backends summed."""
    if not requests:
        return {}
    spent: dict[str, float] = {}
    for key, value in after.items():
        name = "postgres" if key.startswith("pg:") else key
        # A backend that started during the measurement counts from zero.
        spent[name] = spent.get(name, 0.0) + max(0.0, value - before.get(key, 0.0))
    machine = spent.pop("machine", 0.0)
    spent["other"] = max(0.0, machine - sum(spent.values()))
    return {name: seconds * 1000 / requests for name, seconds in spent.items()}
