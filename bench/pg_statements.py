"""``python -m bench.pg_statements``: what Postgres itself spends on a token request's statement,
on this tree's schema and on an older one.

A code exchange is one statement (``PgGrantStore.create_grant``: the grant, its first refresh
token and its ``token.issued`` audit row), and so is a refresh (``rotate_refresh``: the grant
read ``FOR SHARE``, the old token marked, its successor and the audit row inserted). This runs
one of them (``--statement``) on two databases of its own — one migrated as this tree is, one
whose schema ``S`` stops before migration ``V`` (``--before S:V``; by default ``token:0005``,
the refresh tokens' foreign key to their grant, which 0005 drops) — ``C`` at once through the
services' pool (opened as the token service opens it, ``C`` connections), in alternating
rounds, and reads the CPU those ``C`` backends spent from ``/proc`` (Postgres must run on this
machine). ``synchronous_commit`` is the server's (on).

    .venv-bench/bin/python -m bench.pg_statements   # exchanges: 8000 a round, 16 at once, 6 rounds
    .venv-bench/bin/python -m bench.pg_statements --statement refresh
    .venv-bench/bin/python -m bench.pg_statements --before audit:0002
    .venv-bench/bin/python -m bench.pg_statements --batching   # one statement per write or shared

With ``--batching`` both databases are this tree's, and what differs is how the writes reach
them: one statement per write, or as the token service sends them (the writes that arrive while
``BATCHES_IN_FLIGHT`` statements run go together in the next: services.common.batches).
CPU is then per write, and the writes per statement are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import uvloop
from prometheus_client import REGISTRY

from bench.cpu import process_seconds
from bench.stack import DATABASE_URL, drop_database
from services.cli.migrate import SCHEMAS, migration_dir
from services.common import db
from services.common.audit import Origin
from services.common.migrations import migrate
from services.common.settings import Env, Secret, StoreSettings
from services.token.store import BATCHES_IN_FLIGHT, PgGrantStore

APPLICATION = "otesse-bench-statements"


@dataclass(frozen=True)
class Round:
    schema: str
    statements: int
    seconds: float
    backend_us: float
    # Writes per statement (1.0 unless writes were shared: --batching).
    per_statement: float = 1.0


def _batch_totals(statement: str) -> tuple[float, float]:
    """Statements sent for writes of this kind so far in this process, and writes they held."""
    labels = {"kind": statement}
    return (REGISTRY.get_sample_value("otesse_store_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("otesse_store_batch_size_sum", labels) or 0.0)


async def _create(url: str, *, before: tuple[str, str] | None) -> None:
    """A new database at ``url``, every schema migrated; with ``before`` (a schema and a
    version), that schema only below that version."""
    await drop_database(url)
    base, _, name = url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    connection = await asyncpg.connect(url)
    try:
        with tempfile.TemporaryDirectory(prefix="otesse-bench-migrations-") as older:
            for schema in SCHEMAS:
                directory = migration_dir(schema)
                if before is not None and schema == before[0]:
                    for path in sorted(directory.glob("*.sql")):
                        if path.name < before[1]:
                            shutil.copy(path, older)
                    directory = Path(older)
                await migrate(connection, schema=schema, directory=directory)
    finally:
        await connection.close()


SCOPES = ("bookings:read", "customers:read")
ORIGIN = Origin("203.0.113.7", "req-bench-statements")
# What a rotation stores beside the successor: the new pair, sealed (the stack's are ~0.9 KB).
SEALED_BYTES = 900


async def _exchange(store: PgGrantStore) -> bytes:
    """A new grant; returns its refresh token's hash."""
    refresh_hash = secrets.token_bytes(32)
    await store.create_grant(
        grant_id=str(uuid.uuid4()), user_id="user-" + secrets.token_hex(8), client_id="bench-app",
        scopes=SCOPES, code_hash=secrets.token_bytes(32), refresh_hash=refresh_hash,
        refresh_ttl=30 * 86400, code_issued_at=time.time() - 1, origin=ORIGIN)
    return refresh_hash


async def _rotate(store: PgGrantStore, token_hash: bytes) -> bytes:
    """One rotation of ``token_hash``; returns its successor's hash."""
    successor = secrets.token_bytes(32)
    rotation = await store.rotate_refresh(
        token_hash=token_hash, successor_hash=successor,
        successor_sealed=secrets.token_bytes(SEALED_BYTES), refresh_ttl=30 * 86400,
        client_id="bench-app", allowed_scopes=SCOPES, requested_scopes=None, origin=ORIGIN)
    if rotation is None:
        raise RuntimeError("a rotation did nothing")
    return successor


class _Database:
    """One database, written through the services' own pool as the token service opens it."""

    def __init__(self, schema: str, url: str, pool: db.Pool, statement: str, *,
                 in_flight: int) -> None:
        self.schema = schema
        self.url = url
        self._pool = pool
        # in_flight at the concurrency: every write starts its own statement at once.
        self._store = PgGrantStore(pool, access_token_ttl=3600, batches_in_flight=in_flight)
        self._statement = statement
        # Each worker's refresh chain (refresh): the hash its next rotation presents.
        self._chains: list[bytes] = []
        self._pids: list[int] = []

    async def open(self, concurrency: int) -> None:
        if self._statement == "refresh":
            self._chains = [await _exchange(self._store) for _ in range(concurrency)]
        await self.run(concurrency * 20, concurrency)  # warm-up: connections, prepared statements
        self._pids = [row["pid"] for row in await self._pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1", APPLICATION)]

    async def run(self, statements: int, concurrency: int) -> Round:
        each = statements // concurrency

        async def worker(chain: int) -> None:
            for _ in range(each):
                if self._statement == "refresh":
                    self._chains[chain] = await _rotate(self._store, self._chains[chain])
                else:
                    await _exchange(self._store)

        sent, held = _batch_totals(self._statement)
        cpu, wall = sum(map(process_seconds, self._pids)), time.perf_counter()
        await asyncio.gather(*(worker(chain) for chain in range(concurrency)))
        seconds = time.perf_counter() - wall
        spent = sum(map(process_seconds, self._pids)) - cpu
        done = each * concurrency
        now_sent, now_held = _batch_totals(self._statement)
        return Round(self.schema, done, seconds, spent / done * 1e6,
                     (now_held - held) / max(1.0, now_sent - sent))


async def main(options: argparse.Namespace) -> list[Round]:
    base = options.database_url.rpartition("/")[0]
    schema, version = options.before
    if options.batching:
        urls = {"one per write": f"{base}/otesse_bench_statements",
                "shared": f"{base}/otesse_bench_statements_before"}
        befores: tuple[tuple[str, str] | None, ...] = (None, None)
        in_flight = (options.concurrency, BATCHES_IN_FLIGHT)
    else:
        urls = {"this tree": f"{base}/otesse_bench_statements",
                f"{schema} < {version}": f"{base}/otesse_bench_statements_before"}
        befores = (None, options.before)
        in_flight = (options.concurrency, options.concurrency)
    databases: list[_Database] = []
    pools: list[db.Pool] = []
    rounds: list[Round] = []
    try:
        for (name, url), before, flying in zip(urls.items(), befores, in_flight, strict=True):
            await _create(url, before=before)
            settings = replace(StoreSettings.from_env(Env({})), database_url=Secret(url),
                               db_pool_max=options.concurrency)
            pool = await db.create_pool(settings, application_name=APPLICATION,
                                        session={"otesse.access_token_ttl": "3600"})
            pools.append(pool)
            database = _Database(name, url, pool, options.statement, in_flight=flying)
            databases.append(database)
            await database.open(options.concurrency)
        for _ in range(options.rounds):
            for database in databases:
                rounds.append(await database.run(options.statements, options.concurrency))
    finally:
        for pool in pools:
            await pool.close()
        for url in urls.values():
            await drop_database(url)
    what = "code exchange" if options.statement == "exchange" else "refresh"
    print(f"The {what}'s statement, {options.statements} per round, {options.concurrency} "
          f"at once, medians of {options.rounds} alternating rounds; CPU of the backends:")
    print(f"  {'database':<14} {'writes/s':>13} {'backend CPU µs/write':>25}"
          f" {'writes/statement':>17}")
    for name in urls:
        mine = [r for r in rounds if r.schema == name]
        print(f"  {name:<14} {statistics.median(r.statements / r.seconds for r in mine):>13.0f}"
              f" {statistics.median(r.backend_us for r in mine):>25.1f}"
              f" {statistics.median(r.per_statement for r in mine):>17.2f}")
    return rounds


def _before(value: str) -> tuple[str, str]:
    schema, _, version = value.partition(":")
    if schema not in SCHEMAS or not (len(version) == 4 and version.isdigit()):
        raise argparse.ArgumentTypeError(
            f"expected SCHEMA:VERSION, SCHEMA one of {', '.join(SCHEMAS)} and VERSION four "
            f"digits, e.g. token:0005; got {value!r}")
    if not any(path.name.startswith(version) for path in migration_dir(schema).glob("*.sql")):
        raise argparse.ArgumentTypeError(f"{schema} has no migration {version}")
    return schema, version


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_statements",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=8000, metavar="N")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C")
    parser.add_argument("--rounds", type=int, default=6, metavar="R")
    parser.add_argument("--statement", choices=("exchange", "refresh"), default="exchange",
                        help="the code exchange's statement (default) or a refresh's")
    parser.add_argument("--before", type=_before, default=("token", "0005"),
                        metavar="SCHEMA:VERSION",
                        help="the older database's SCHEMA stops before migration VERSION "
                             "(default token:0005)")
    parser.add_argument("--database-url", default=DATABASE_URL,
                        help="where to create the two databases: this URL's server "
                             f"(default {DATABASE_URL.rpartition('/')[0]})")
    parser.add_argument("--batching", action="store_true",
                        help="compare one statement per write with writes shared as the token "
                             "service shares them (both on this tree's schema)")
    options = parser.parse_args(argv)
    if min(options.statements, options.concurrency, options.rounds) < 1:
        parser.error("--statements, --concurrency and --rounds must be at least 1")
    return options


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
