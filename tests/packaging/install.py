"""What ships, built and installed the way a deployment installs it.

:func:`build_wheel` builds the project's wheel from a copy of the sources (the checkout is left
as it was); :func:`fresh_environment` makes a virtual environment with a given interpreter and
installs into it, not editable, the runtime part of ``requirements.lock`` with
``--require-hashes`` from the wheelhouse of ``scripts/wheelhouse`` (no network once that holds
the pins), then the wheel. Nothing of the checkout is importable there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The top-level folders the wheel is built from (``[tool.setuptools.packages.find]``).
PACKAGES = ("services", "otesse")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def source_files() -> list[str]:
    """Every file of the packages, as a path relative to the repository root."""
    return sorted(path.relative_to(ROOT).as_posix()
                  for package in PACKAGES for path in (ROOT / package).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts
                  and path.suffix != ".pyc")


def data_files() -> list[str]:
    """The files that are not Python source: templates, static assets, SQL migrations, type
    stubs and markers — what the services read at run time beside their code."""
    return [name for name in source_files() if not name.endswith(".py")]


def _run(command: list[str], *, timeout: float = 180) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(workdir: Path) -> Path:
    """Builds the wheel from a copy of pyproject.toml and the packages; returns its path."""
    source = workdir / "source"
    source.mkdir(parents=True)
    shutil.copy2(ROOT / "pyproject.toml", source)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=_SKIP)
    out = workdir / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--wheel-dir", str(out), str(source)])
    (wheel,) = out.glob("otesse_auth-*.whl")
    return wheel


def runtime_lock(target: Path) -> Path:
    """Writes the runtime part of the lock (hashes kept) to ``target``; returns it."""
    target.write_text(_run([sys.executable,
                            str(ROOT / "deploy" / "docker" / "runtime-requirements.py"),
                            str(ROOT / "requirements.lock"), str(ROOT / "pyproject.toml")]))
    return target


def wheelhouse() -> Path:
    """The runtime wheels, fetched once per machine (see ``scripts/wheelhouse``)."""
    return Path(_run([str(ROOT / "scripts" / "wheelhouse")]).strip())


def fresh_environment(python: str, target: Path, wheels: Path, *,
                      wheel: Path | None = None) -> Path:
    """A new virtual environment of ``python`` at ``target`` with the runtime lock installed
    with ``--require-hashes`` from ``wheels`` only, and ``wheel`` if given; returns its
    ``bin`` folder. This test run's pip does the installing (``pip --python``), so the new
    environment needs no pip of its own."""
    _run([python, "-m", "venv", "--without-pip", str(target)])
    bin_dir = target / "bin"
    pip = [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
           "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps"]
    lock = runtime_lock(target / "runtime.lock")
    _run([*pip, "--require-hashes", "--requirement", str(lock)])
    if wheel is not None:
        _run([*pip, str(wheel)])
    return bin_dir
