"""``python -m bench.redis_clients``: the two Redis clients side by side, on the same commands.

The services send their once-per-request Redis commands through
:mod:`services.common.redis_lean` and everything else through redis-py
(:mod:`services.common.redis_client`). This measures what one command costs this process with
each — CPU per command (user + system, so the socket calls count), commands per second and
latency — at the concurrency the services see, in alternating rounds, on keys of its own
(``otesse-bench-clients:``, deleted at the end). Redis's own CPU is not counted: it is the
same for both.

    .venv/bin/python -m bench.redis_clients                 # GETEX, 20000 commands, 16 at once
    .venv/bin/python -m bench.redis_clients --command script
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import uvloop

from bench.load import percentile
from services.common import redis_client
from services.common.redis_lean import LeanRedis
from services.common.settings import Env, Secret, StoreSettings

PREFIX = "otesse-bench-clients:"
VALUE = b"v" * 200  # about a session record's size
# The code-consumption script's shape: read, and overwrite with a marker.
SCRIPT = """
local record = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', 60)
return record
"""

Command = Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class Round:
    client: str
    commands: int
    seconds: float
    cpu_us: float
    p50_ms: float
    p99_ms: float


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_round(name: str, command: Command, *, total: int, concurrency: int) -> Round:
    """``total`` calls of ``command``, ``concurrency`` at once; what they cost this process."""
    latencies: list[float] = []
    per_worker = total // concurrency

    async def worker(offset: int) -> None:
        for index in range(per_worker):
            start = time.perf_counter()
            await command(offset + index)
            latencies.append(time.perf_counter() - start)

    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker(w * per_worker) for w in range(concurrency)))
    seconds, spent = time.perf_counter() - wall, _cpu() - cpu
    done = per_worker * concurrency
    return Round(name, done, seconds, spent / done * 1e6, percentile(latencies, 0.5) * 1e3,
                 percentile(latencies, 0.99) * 1e3)


def _commands(kind: str, heavy: aioredis.Redis, lean: LeanRedis, keys: int,
              ) -> dict[str, Command]:
    def key(index: int) -> str:
        return f"{PREFIX}{index % keys}"

    if kind == "getex":
        async def heavy_getex(index: int) -> object:
            return await heavy.getex(key(index), ex=600)

        async def lean_getex(index: int) -> object:
            return await lean.execute(b"GETEX", key(index), b"EX", 600)

        return {"redis-py": heavy_getex, "lean": lean_getex}
    heavy_script = heavy.register_script(SCRIPT)
    lean_script = lean.script(SCRIPT)

    async def heavy_run(index: int) -> object:
        return await heavy_script(keys=[key(index)], args=[VALUE])

    async def lean_run(index: int) -> object:
        return await lean_script(keys=[key(index)], args=[VALUE])

    return {"redis-py": heavy_run, "lean": lean_run}


async def main(options: argparse.Namespace) -> None:
    settings = StoreSettings.from_env(Env({}))
    if options.redis_url:
        settings = StoreSettings(settings.database_url, Secret(options.redis_url),
                                 settings.redis_prefix, settings.db_pool_min,
                                 settings.db_pool_max)
    heavy = redis_client.create_redis(settings)
    lean = redis_client.create_lean(settings)
    keys = 1000
    try:
        for index in range(keys):
            await heavy.set(f"{PREFIX}{index}", VALUE, ex=600)
        commands = _commands(options.command, heavy, lean, keys)
        for name, command in commands.items():  # warm-up: connections, script cache
            await run_round(name, command, total=options.concurrency * 50,
                         concurrency=options.concurrency)
        rounds: list[Round] = []
        for _ in range(options.rounds):
            for name, command in commands.items():
                rounds.append(await run_round(name, command, total=options.commands,
                                           concurrency=options.concurrency))
    finally:
        async for found in heavy.scan_iter(match=f"{PREFIX}*", count=1000):
            await heavy.delete(found)
        await heavy.aclose()
        await lean.aclose()
    print(f"{options.command.upper()}, {options.commands} commands per round, "
          f"{options.concurrency} at once, medians of {options.rounds} alternating rounds:")
    print_medians(rounds, list(commands), who="client", what="command")


def print_medians(rounds: list[Round], names: list[str], *, who: str, what: str) -> None:
    """One line per contender: the medians of its rounds (``what`` is counted per second and
    its CPU per one)."""
    print(f"  {who:<10} {what + 's/s':>13} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU µs/' + what:>17}")
    for name in names:
        mine = [r for r in rounds if r.client == name]
        print(f"  {name:<10} {statistics.median(r.commands / r.seconds for r in mine):>13.0f} "
              f"{statistics.median(r.p50_ms for r in mine):>8.3f} "
              f"{statistics.median(r.p99_ms for r in mine):>8.3f} "
              f"{statistics.median(r.cpu_us for r in mine):>17.1f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_clients",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", choices=("getex", "script"), default="getex")
    parser.add_argument("--commands", type=int, default=20000, metavar="N")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C")
    parser.add_argument("--rounds", type=int, default=3, metavar="R")
    parser.add_argument("--redis-url", default="", help="default: OTESSE_REDIS_URL's default")
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
