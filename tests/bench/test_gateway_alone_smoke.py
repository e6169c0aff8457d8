"""``python -m bench.gateway_alone`` runs: the four servers start, answer every request with 200
and are each measured, the gateway as ``otesse-auth serve gateway`` runs it. No speed is
asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import pytest

from bench import gateway_alone


async def test_every_server_answers_and_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    options = gateway_alone.parse_args(["--requests", "64", "--connections", "4",
                                        "--rounds", "2"])
    rounds = await gateway_alone.main(options)
    assert [r.server for r in rounds] == ["protocol", "uvicorn", "gateway", "edge"] * 2
    assert all(r.requests == 64 and r.failed == 0 and r.seconds > 0 for r in rounds)
    printed = capsys.readouterr().out
    assert all(name in printed for name in gateway_alone.SERVERS)
