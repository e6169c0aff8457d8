"""``bench.compare --baseline REF`` runs a commit's own code: its tree comes out of git as that
commit has it, runs on this tree's ``.venv``, and a commit pinned to other dependencies is
refused rather than measured on the wrong libraries."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

from bench import baseline, stack
from bench.stack import ROOT, StackFailed


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_checkout_is_the_commits_tree_on_this_venv() -> None:
    commit = git("rev-parse", "--short", "HEAD")
    assert commit in baseline.describe("HEAD")
    with baseline.checkout("HEAD") as root:
        assert root != ROOT
        assert (root / "services/token/store.py").read_text() == git(
            "show", "HEAD:services/token/store.py") + "\n"
        assert (root / ".venv").resolve() == (ROOT / ".venv").resolve()
        assert (root / "scripts/run-local").stat().st_mode & 0o111
    assert not root.exists()


def test_a_commit_with_other_dependencies_is_refused() -> None:
    # The first commit that touched the lock pinned other versions than today's.
    first = git("log", "--diff-filter=A", "--format=%h", "--", "requirements.lock").split()[-1]
    if git("show", f"{first}:requirements.lock") == (ROOT / "requirements.lock").read_text(
            ).strip():
        pytest.fail("the lock never changed: pick another commit for this test")
    with pytest.raises(StackFailed, match="requirements.lock differs"), \
            baseline.checkout(first):
        pass


def test_an_unknown_ref_says_so() -> None:
    with pytest.raises(StackFailed, match="git"):
        baseline.describe("no-such-ref-anywhere")


def test_a_virtualenv_without_python_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackFailed, match="has no Python"), \
            baseline.checkout("HEAD", venv=tmp_path):
        pass


def test_the_interpreter_is_named_with_its_build() -> None:
    named = stack.interpreter(ROOT / ".venv")
    assert named.startswith(f"Python {platform.python_version()} (")
    assert "--enable-optimizations" in named and "--with-lto" in named
    # This test runs on .venv's interpreter too: its own memory map says how it links.
    shared = "libpython" in Path("/proc/self/maps").read_text()
    assert ("libpython shared" in named) == shared
    assert ("libpython in the executable" in named) == (not shared)
    assert stack.interpreter(ROOT / "no-such-venv").endswith("(its Python did not answer)")
