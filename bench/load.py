"""A closed-loop load runner: N workers each repeat one request, timing every one.

Prints requests per second and the p50 / p99 latency. The client runs on the same machine as
the servers, so its own CPU cost is part of what is measured; numbers compare runs on one
machine, not machines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{self.name:<34} {self.rps:>9.0f} req/s   p50 {self.p50_ms:>7.2f} ms   "
                f"p99 {self.p99_ms:>7.2f} ms   ({self.requests} requests, {self.errors} errors)")


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def run(name: str, step: Callable[[int], Awaitable[bool]], *, total: int,
              concurrency: int) -> Result:
    """Calls ``step(i)`` for i in 0..total-1 from ``concurrency`` workers; a step returns
    whether it succeeded."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for index in counter:
            started = time.perf_counter()
            ok = await step(index)
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return Result(name, len(latencies), errors, elapsed,
                  percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000)
