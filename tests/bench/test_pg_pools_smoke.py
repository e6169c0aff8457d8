"""``python -m bench.pg_pools`` runs: both pools answer every statement, each round is
counted. No speed is asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import pytest

from bench import pg_pools
from tests.conftest import ADMIN_URL


async def test_both_pools_run_every_round(capsys: pytest.CaptureFixture[str]) -> None:
    options = pg_pools.parse_args(["--statements", "64", "--concurrency", "4", "--rounds", "2",
                                   "--database-url", ADMIN_URL])
    rounds = await pg_pools.main(options)
    assert [r.client for r in rounds] == ["db.Pool", "asyncpg"] * 2
    assert all(r.commands == 64 and r.cpu_us > 0 for r in rounds)
    printed = capsys.readouterr().out
    assert "db.Pool" in printed and "asyncpg" in printed and "CPU µs/statement" in printed
