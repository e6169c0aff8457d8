"""The three bench commands share their arguments and endings (bench/command.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bench import command
from bench.stack import DATABASE_URL, REDIS_URL


@pytest.mark.parametrize("module", ["bench", "bench.compare", "bench.soak"])
def test_every_command_takes_the_store_arguments(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--database-url" in result.stdout and "--redis-url" in result.stdout
    assert DATABASE_URL in result.stdout and REDIS_URL in result.stdout


@pytest.mark.parametrize(("argv", "expected"), [
    ([], 500), (["--requests", "50"], 16), (["--warmup", "0"], 0),
    (["--requests", "50", "--concurrency", "40"], 40),
], ids=["a-tenth", "at-least-one-per-worker", "explicit-zero", "more-workers"])
def test_the_warmup_is_a_tenth_of_the_requests_and_at_least_one_per_worker(
        argv: list[str], expected: int) -> None:
    parser = argparse.ArgumentParser()
    command.add_load_arguments(parser, requests=5000, concurrency=16)
    assert command.warmup(parser.parse_args(argv)) == expected


def test_a_failed_or_interrupted_run_says_so_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert command.failed("bench", RuntimeError("the stack would not start")) == 1
    assert command.interrupted("soak", "the stack is stopped") == 130
    assert capsys.readouterr().err.splitlines() == [
        "bench: the stack would not start", "soak: interrupted; the stack is stopped"]
