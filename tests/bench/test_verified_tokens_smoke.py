"""``python -m bench.verified_tokens`` runs: both cache sizes in every round, each with a figure
for first sight and for again. No speed is asserted (DESIGN §8: never a timed test)."""

from __future__ import annotations

import pytest

from bench import verified_tokens


async def test_both_sizes_run_every_round(capsys: pytest.CaptureFixture[str]) -> None:
    options = verified_tokens.parse_args(["--tokens", "50", "--rounds", "2", "--size", "10"])
    rounds = await verified_tokens.main(options)
    assert [r.size for r in rounds] == [0, 10] * 2
    assert all(r.first_us > 0 and r.again_us > 0 for r in rounds)
    assert "first sight" in capsys.readouterr().out


def test_the_default_size_is_the_services() -> None:
    assert verified_tokens.parse_args([]).size == 10_000
    with pytest.raises(SystemExit):
        verified_tokens.parse_args(["--size", "0"])
