"""The benchmarks' stack runs every service on the virtualenv it is given (``--venv``; the make
targets give ``.venv-bench``, Debian's optimized ``python3``), not on whatever ``.venv`` holds:
issue #13 asks for figures taken on the interpreter production runs."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from bench.stack import ROOT, StackFailed, running_stack, service_pids
from tests.conftest import REDIS_URL, _database_url


def _another_venv(where: Path) -> Path:
    """A virtualenv of its own name with .venv's interpreter and packages: its ``pyvenv.cfg``
    (so the interpreter takes it for its prefix), ``lib`` (a link), ``bin/python`` (a link) and
    ``bin/otesse-auth`` (a copy whose ``#!`` names this virtualenv's ``python``)."""
    venv = where / "another-venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(ROOT / ".venv" / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / "lib").symlink_to((ROOT / ".venv" / "lib").resolve())
    (venv / "bin" / "python").symlink_to(ROOT / ".venv" / "bin" / "python")
    script = (ROOT / ".venv" / "bin" / "otesse-auth").read_text().split("\n", 1)[1]
    (venv / "bin" / "otesse-auth").write_text(f"#!{venv / 'bin' / 'python'}\n{script}")
    (venv / "bin" / "otesse-auth").chmod(0o755)
    return venv


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


async def test_every_service_runs_on_the_virtualenv_given(tmp_path: Path) -> None:
    venv = _another_venv(tmp_path)
    database_url = _database_url(f"otesse_test_venv_{secrets.token_hex(4)}")
    async with running_stack(database_url=database_url, redis_url=REDIS_URL,
                             log_path=tmp_path / "stack.log", venv=venv,
                             redis_prefix=f"otesse-test-venv-{secrets.token_hex(4)}:") as stack:
        assert set(stack.pids) == {"registry", "token", "authorize", "gateway", "bookings"}
        for name, pid in stack.pids.items():
            # "<venv>/bin/python <venv>/bin/otesse-auth serve <name>": the script's #! ran.
            assert _cmdline(pid)[:4] == [str(venv / "bin" / "python"),
                                         str(venv / "bin" / "otesse-auth"), "serve", name]
        run_local = Path(f"/proc/{stack.pids['gateway']}/stat").read_text()
        parent = int(run_local.rsplit(")", 1)[1].split()[1])
        assert _cmdline(parent)[0] == str(venv / "bin" / "python")
        assert service_pids(parent) == stack.pids


async def test_a_virtualenv_without_python_stops_the_stack_before_it_starts(
        tmp_path: Path) -> None:
    with pytest.raises(StackFailed, match="has no Python"):
        async with running_stack(log_path=tmp_path / "stack.log", venv=tmp_path):
            pass
