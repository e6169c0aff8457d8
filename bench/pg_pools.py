"""``python -m bench.pg_pools``: the services' Postgres pool against asyncpg's, on one statement.

Every hot path runs one statement on a pooled connection (:mod:`services.common.db`). This
measures what that costs this process — CPU per statement (user + system, so the socket calls
count), statements per second and latency — through the services' pool and through asyncpg's
own (with the bounded acquire the services used before it), at the concurrency the services
see, in alternating rounds. Postgres's own CPU is not counted: it is the same for both.

    .venv-bench/bin/python -m bench.pg_pools                 # 20000 statements, 16 at once
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import asyncpg
import uvloop

from bench.redis_clients import Command, Round, print_medians, run_round
from bench.stack import DATABASE_URL
from services.common import db
from services.common.settings import Env, Secret, StoreSettings

STATEMENT = "SELECT $1::int"


async def _asyncpg_pool(settings: StoreSettings) -> asyncpg.Pool[asyncpg.Record]:
    """asyncpg's pool as the services had it: the same connections, every acquire bounded."""
    pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
        settings.database_url.value, min_size=0, max_size=settings.db_pool_max,
        max_queries=db.MAX_USES, max_inactive_connection_lifetime=db.IDLE_SECONDS,
        timeout=db.ACQUIRE_SECONDS, command_timeout=db.STATEMENT_SECONDS,
        statement_cache_size=256, server_settings={"jit": "off"})
    return pool


async def main(options: argparse.Namespace) -> list[Round]:
    settings = replace(StoreSettings.from_env(Env({})),
                       database_url=Secret(options.database_url),
                       db_pool_max=options.concurrency)
    ours = await db.create_pool(settings, application_name="otesse-bench-pools")
    theirs = await _asyncpg_pool(settings)

    async def through_ours(index: int) -> object:
        return await ours.fetchval(STATEMENT, index)

    async def through_asyncpg(index: int) -> object:
        async with theirs.acquire(timeout=db.ACQUIRE_SECONDS) as connection:
            return await connection.fetchval(STATEMENT, index)

    pools: dict[str, Command] = {"db.Pool": through_ours, "asyncpg": through_asyncpg}
    rounds: list[Round] = []
    try:
        for name, command in pools.items():  # warm-up: connections, prepared statements
            await run_round(name, command, total=options.concurrency * 20,
                            concurrency=options.concurrency)
        for _ in range(options.rounds):
            for name, command in pools.items():
                rounds.append(await run_round(name, command, total=options.statements,
                                              concurrency=options.concurrency))
    finally:
        await ours.close()
        await theirs.close()
    print(f"{STATEMENT!r}, {options.statements} statements per round, {options.concurrency} "
          f"at once, medians of {options.rounds} alternating rounds:")
    print_medians(rounds, list(pools), who="pool", what="statement")
    return rounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_pools",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20000, metavar="N")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C")
    parser.add_argument("--rounds", type=int, default=3, metavar="R")
    parser.add_argument("--database-url", default=DATABASE_URL.rsplit("/", 1)[0] + "/postgres",
                        help="any database: the statement reads no table (default the "
                             "server's postgres database)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
