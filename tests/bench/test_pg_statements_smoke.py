"""``python -m bench.pg_statements`` runs: both schemas (or both ways of sending writes) answer
every statement, exchanges and refreshes, each round reads its backends' CPU, and both
databases are gone afterwards. No speed is asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import argparse

import asyncpg
import pytest

from bench import pg_statements
from tests.conftest import ADMIN_URL


@pytest.mark.parametrize(("extra", "older"), [
    ([], "token < 0005"),
    (["--statement", "refresh"], "token < 0005"),
    (["--before", "audit:0002"], "audit < 0002"),
    (["--batching"], "shared"),
    (["--batching", "--statement", "refresh"], "shared"),
])
async def test_both_schemas_run_every_round(capsys: pytest.CaptureFixture[str],
                                            extra: list[str], older: str) -> None:
    options = pg_statements.parse_args(["--statements", "400", "--concurrency", "4",
                                        "--rounds", "2", "--database-url", ADMIN_URL, *extra])
    rounds = await pg_statements.main(options)
    first = "one per write" if "--batching" in extra else "this tree"
    assert [r.schema for r in rounds] == [first, older] * 2
    assert all(r.statements == 400 and r.backend_us > 0 for r in rounds)
    # Only the shared database's writes share statements (four workers, two in flight).
    assert all((r.per_statement > 1.0) == (r.schema == "shared") for r in rounds)
    assert "backend CPU µs/write" in capsys.readouterr().out
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        left = await admin.fetchval("SELECT count(*) FROM pg_database"
                                    " WHERE datname LIKE 'otesse_bench_statements%'")
    finally:
        await admin.close()
    assert left == 0


@pytest.mark.parametrize("value", ["token", "token:5", "tokens:0005", "token:0099"])
def test_an_older_schema_must_exist(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        pg_statements._before(value)
