"""A closed-loop load runner: C workers each repeat one request, timing every one.

Reports requests per second and the p50 / p99 latency. The client runs on the same machine as
the servers, so its own CPU cost is part of what is measured; numbers compare runs on one
machine, not machines.

A step is an async function of the request's index that returns when the request succeeded and
raises when it did not (a wrong status, a missing field, a transport error): every exception is
counted as an error, and the first few are kept to show what went wrong.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Step = Callable[[int], Awaitable[None]]
ERROR_SAMPLES = 3


class StepFailed(Exception):
    """A request answered, but not as it should have (the message says how)."""


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    concurrency: int
    error_samples: tuple[str, ...] = ()
    # CPU milliseconds per request, by process (client, gateway, token, …, postgres, redis).
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # Resident memory of each server process (KiB) as the measurement ended, still under load.
    rss_kib: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{self.name:<28} {self.rps:>7.0f} req/s   p50 {self.p50_ms:>6.2f} ms   "
                f"p99 {self.p99_ms:>6.2f} ms   ({self.requests} requests, "
                f"{self.errors} errors)")

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "requests": self.requests, "errors": self.errors,
                "seconds": round(self.seconds, 3), "rps": round(self.rps, 1),
                "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "concurrency": self.concurrency, "error_samples": list(self.error_samples),
                "cpu_ms_per_request": {k: round(v, 3) for k, v in self.cpu_ms.items()},
                "rss_mib": {k: round(v / 1024, 1) for k, v in self.rss_kib.items()}}


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest sample with ``fraction`` of all at or below."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


async def run(name: str, step: Step, *, total: int, concurrency: int) -> Result:
    """Calls ``step(i)`` for i in 0..total-1 from ``concurrency`` workers."""
    latencies: list[float] = []
    samples: list[str] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for index in counter:
            started = time.perf_counter()
            try:
                await step(index)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                errors += 1
                if len(samples) < ERROR_SAMPLES:
                    samples.append(f"{type(exc).__name__}: {exc}"[:300])
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, total)))))
    elapsed = time.perf_counter() - began
    return Result(name, len(latencies), errors, elapsed, percentile(latencies, 0.50) * 1000,
                  percentile(latencies, 0.99) * 1000, concurrency, tuple(samples))
