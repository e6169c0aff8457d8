"""The lock installs and runs on the oldest Python that ``requires-python`` admits.

``requires-python = ">=3.11,<3.12"`` admits 3.11.0–3.11.2, where redis-py imports
``async-timeout`` (Python 3.11.3 fixed ``asyncio.timeout``); a lock resolved on a newer 3.11 left
it out, and every service using Redis died at import. Debian bookworm's own ``/usr/bin/python3``
is 3.11.2 (and it is what the container stand-in base runs): the runtime part of the lock is
installed into a fresh environment of it with ``--require-hashes``, then the wheel, and the whole
stack runs from there.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RUN_ID
from tests.integration.stack import ROOT, Stack, running_stack
from tests.packaging.install import fresh_environment
from tests.packaging.site import Visit, tour

SYSTEM_PYTHON = "/usr/bin/python3"
PASSWORD = "a long system passphrase"


def system_python_version() -> tuple[int, ...]:
    """The version of ``/usr/bin/python3``; fails the test, saying why, when there is no 3.11."""
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:3])"],
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail(f"{SYSTEM_PYTHON} is missing: this test proves the lock on the system's "
                    "Python 3.11 (Debian bookworm: apt-get install python3); nothing was tested")
    version = tuple(int(part) for part in result.stdout.split())
    if version[:2] != (3, 11):
        pytest.fail(f"{SYSTEM_PYTHON} is Python {'.'.join(map(str, version))}, outside "
                    "requires-python: there is no system Python 3.11 to prove the lock on; "
                    "nothing was tested")
    return version


def test_requires_python_admits_the_system_python() -> None:
    admitted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert admitted == ">=3.11,<3.12"
    version = system_python_version()
    # Say which interpreter was proven: the range's old end (before 3.11.3) is the point.
    print(f"{SYSTEM_PYTHON}: Python {'.'.join(map(str, version))}")


@pytest.fixture(scope="module")
def system_bin(wheel: Path, wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    system_python_version()
    return fresh_environment(SYSTEM_PYTHON, tmp_path_factory.mktemp("system") / "venv",
                             wheels, wheel=wheel)


def test_the_lock_pins_what_redis_needs_before_3_11_3(system_bin: Path) -> None:
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^async-timeout==", lock, re.M)
    result = subprocess.run([str(system_bin / "python"), "-c", "import redis.asyncio"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def system_stack(system_bin: Path, test_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("system-home")
    with running_stack(test_env, tmp_path_factory.mktemp("system-logs"),
                       otesse_auth=system_bin / "otesse-auth", cwd=home) as stack:
        yield stack


async def test_the_stack_runs_on_the_system_python(system_bin: Path,
                                                   system_stack: Stack) -> None:
    email = f"system-python-{RUN_ID}@example.com"
    created = subprocess.run([str(system_bin / "otesse-auth"), "users", "create", "--email",
                              email, "--password", PASSWORD], env=system_stack.env,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    async with httpx.AsyncClient(base_url=system_stack.gateway, timeout=10.0) as http:
        toured = await tour(Visit(http), email=email, password=PASSWORD)
        # A refresh: the token service's Redis and Postgres paths on this interpreter.
        refreshed = await http.post("/oauth/token", json={
            "grant_type": "refresh_token", "refresh_token": toured.tokens["refresh_token"],
            "client_id": toured.client_id, "client_secret": toured.client_secret})
    assert refreshed.status_code == 200, refreshed.text
