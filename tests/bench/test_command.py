"""The three bench commands share their arguments and endings (bench/command.py)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bench import command
from bench.stack import DATABASE_URL, REDIS_URL, AsInProduction, stack_env
from services.common.ratelimit import RateLimit
from services.common.settings import Env
from services.gateway.settings import GatewaySettings
from services.token.settings import TokenSettings


@pytest.mark.parametrize("module", ["bench", "bench.compare", "bench.soak"])
def test_every_command_takes_the_store_arguments(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--database-url" in result.stdout and "--redis-url" in result.stdout
    assert DATABASE_URL in result.stdout and REDIS_URL in result.stdout


@pytest.mark.parametrize("module", ["bench", "bench.compare", "bench.soak",
                                    "bench.local_validation"])
def test_every_command_runs_the_services_on_its_own_virtualenv_unless_told(
        module: str) -> None:
    """``--venv``: the make targets run in .venv-bench, whose interpreter then runs the
    services too (tests/bench/test_stack_venv.py shows the stack obeys it)."""
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--venv PATH" in result.stdout
    assert f"the one this command runs in, {Path(sys.prefix).name}" in " ".join(
        result.stdout.split())


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


@pytest.mark.parametrize("limits", [False, True], ids=["off", "on"])
def test_limits_turn_every_rate_limit_on_with_bounds_no_run_reaches(
        limits: bool, tmp_path: Path) -> None:
    """``--limits``: the services read every limit the stack sets (a misspelt variable would
    leave its limit at the production default, and a run would meet it)."""
    env = Env(stack_env(DATABASE_URL, REDIS_URL, str(tmp_path),
                        production=AsInProduction(limits=limits)))
    gateway, token = GatewaySettings.from_env(env), TokenSettings.from_env(env)
    unreached = RateLimit(1_000_000_000, 60.0) if limits else None
    assert [gateway.rate_login_per_ip, gateway.rate_token_per_ip,
            gateway.rate_client_auth_failures_per_ip, token.rate_per_client] == [unreached] * 4


@pytest.mark.parametrize(("access_logs", "level"), [(False, "WARNING"), (True, "INFO")])
def test_access_logs_run_the_services_at_info(access_logs: bool, level: str,
                                              tmp_path: Path) -> None:
    env = Env(stack_env(DATABASE_URL, REDIS_URL, str(tmp_path),
                        production=AsInProduction(access_logs=access_logs)))
    assert GatewaySettings.from_env(env).log_level == TokenSettings.from_env(env).log_level == level


@pytest.mark.parametrize("module", ["bench", "bench.compare"])
def test_the_load_commands_can_run_as_production_does(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--limits" in result.stdout and "--access-logs" in result.stdout
