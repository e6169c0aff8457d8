"""Services never import each other; the shared library imports no service; the CLI, the
composition root, may import any service, and nothing imports it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(ROOT / ".venv" / "bin" / "lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "imports", "contract"), [
    ("services/token/probe.py", "from services.cli import main",
     "The CLI is the composition root: nothing imports it BROKEN"),
    ("services/common/probe.py", "from services.cli import output",
     "The CLI is the composition root: nothing imports it BROKEN"),
    ("services/gateway/probe.py", "from services.token import keys",
     "Services never import each other BROKEN"),
], ids=["service-imports-cli", "library-imports-cli", "service-imports-service"])
def test_the_contracts_catch_a_forbidden_import(tmp_path: Path, module: str, imports: str,
                                                contract: str) -> None:
    shutil.copytree(ROOT / "services", tmp_path / "services",
                    ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(f"{imports}\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert contract in result.stdout


def test_the_cli_may_import_service_internals(tmp_path: Path) -> None:
    """The composition root is exempt: it runs the services and their operator commands."""
    shutil.copytree(ROOT / "services", tmp_path / "services",
                    ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "services/cli/probe.py").write_text(
        "from services.gateway import upstream_client\nfrom services.registry import store\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_help_lists_every_target_with_its_description() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    targets = phony.removeprefix(".PHONY:").split()
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()
              if line.strip()}
    assert sorted(listed) == sorted(targets)
    assert all(description.strip() for description in listed.values())
