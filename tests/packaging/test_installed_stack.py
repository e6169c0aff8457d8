"""What is installed is what is tested: the wheel, installed (not editable) into a fresh virtual
environment, runs the whole stack.

The wheel is built from the checkout, installed with the runtime lock (``--require-hashes``, from
the wheelhouse: no network on a repeat run) into a new environment, and every service is started
by that environment's own ``otesse-auth`` console script from a folder outside the repository,
so nothing can be imported from the checkout. The installed CLI migrates a database of its own
and creates the user; a person then visits every page and asset through the gateway and makes
one documented token exchange, and the installed bookings API accepts the token.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.conftest import ADMIN_URL, REDIS_URL, RUN_ID
from tests.integration.stack import ROOT, Stack, running_stack
from tests.packaging.install import fresh_environment
from tests.packaging.site import Visit, tour

STATIC = ROOT / "services" / "authorize" / "static"
PASSWORD = "a long installed passphrase"


@dataclass(frozen=True)
class Installed:
    bin: Path
    # A folder outside the repository: the services' working directory.
    home: Path


@pytest.fixture(scope="module")
def installed(wheel: Path, wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    workdir = tmp_path_factory.mktemp("installed")
    bin_dir = fresh_environment(sys.executable, workdir / "venv", wheels, wheel=wheel)
    home = workdir / "home"
    home.mkdir()
    return Installed(bin_dir, home)


def run_cli(installed: Installed, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(installed.bin / "otesse-auth"), *args], env=env,
                            cwd=installed.home, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"otesse-auth {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest_asyncio.fixture(scope="module")
async def wheel_env(redis: aioredis.Redis, redis_prefix: str) -> AsyncIterator[dict[str, str]]:
    """A database of its own (migrated by the installed CLI) and a Redis prefix under this
    run's (the session's ``redis`` fixture deletes it)."""
    name = f"otesse_test_{RUN_ID}_wheel"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield {"OTESSE_DATABASE_URL": ADMIN_URL.rpartition("/")[0] + f"/{name}",
               "OTESSE_REDIS_URL": REDIS_URL, "OTESSE_REDIS_PREFIX": f"{redis_prefix}wheel:"}
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module")
def installed_stack(installed: Installed, wheel_env: dict[str, str],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**wheel_env, "PATH": "/usr/bin:/bin"}
    run_cli(installed, env, "migrate")
    with running_stack(wheel_env, tmp_path_factory.mktemp("installed-logs"),
                       otesse_auth=installed.bin / "otesse-auth", cwd=installed.home) as stack:
        yield stack


def test_the_environment_imports_nothing_from_the_checkout(installed: Installed) -> None:
    result = subprocess.run(
        [str(installed.bin / "python"), "-c",
         "import otesse, services, services.authorize.app as a; print(services.__file__); "
         "print(otesse.__file__); print(a.__file__)"],
        cwd=installed.home, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    site_packages = installed.bin.parent / "lib"
    for location in result.stdout.split():
        assert Path(location).is_relative_to(site_packages), location
    editable = list(site_packages.rglob("__editable__*")) + list(site_packages.rglob("*.egg-link"))
    assert not editable, editable


async def test_every_page_and_asset_through_the_gateway(installed: Installed,
                                                        installed_stack: Stack) -> None:
    email = f"installed-{RUN_ID}@example.com"
    run_cli(installed, installed_stack.env, "users", "create", "--email", email,
            "--password", PASSWORD)
    async with httpx.AsyncClient(base_url=installed_stack.gateway, timeout=10.0) as http:
        visit = Visit(http)
        toured = await tour(visit, email=email, password=PASSWORD)
        bookings = await http.get(f"{installed_stack.bookings}/v1/bookings", headers={
            "Authorization": f"Bearer {toured.tokens['access_token']}"})
    assert bookings.status_code == 200, bookings.text
    assert bookings.json()["client_id"] == toured.client_id

    static = {f"/static/{path.name}": path.read_bytes() for path in STATIC.iterdir()}
    served = {path: body for path, body in visit.assets.items() if path.startswith("/static/")}
    assert served == static, "every static file is served, byte for byte"
    assert any(path.endswith("/logo") for path in visit.assets), visit.assets.keys()
