"""The baseline of ``bench.compare --baseline REF``: the source tree of an older commit, run
beside the working tree so that a change is judged against what it changes, in the same run.

Timing on a shared machine moves by a quarter from one run to the next (issue #13), so a
before/after taken at two different times says little; two stacks side by side, measured in
alternating rounds, see the same machine. The commit's files come from ``git archive`` into a
temporary folder (no worktree is registered, nothing in the repository changes) and run on this
tree's ``.venv`` (a symbolic link), their own modules first on ``PYTHONPATH``
(:func:`bench.stack.running_stack`). Dependencies are this tree's: a baseline whose
``requirements.lock`` differs is refused rather than measured on the wrong libraries.
"""

from __future__ import annotations

import contextlib
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.stack import ROOT, StackFailed


def _git(*args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        raise StackFailed(f"git {' '.join(args)}: "
                          f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def describe(ref: str) -> str:
    """``ref`` and the commit it names, short, as the report shows it."""
    commit = _git("rev-parse", "--short", f"{ref}^{{commit}}").decode().strip()
    return f"{ref} ({commit})" if commit != ref else commit


@contextlib.contextmanager
def checkout(ref: str, venv: Path = ROOT / ".venv") -> Iterator[Path]:
    """A temporary copy of ``ref``'s tree, runnable with this tree's ``.venv`` (or ``venv``:
    the same pins on another interpreter, ``make bench-venv``)."""
    lock = ROOT / "requirements.lock"
    if _git("show", f"{ref}:requirements.lock") != lock.read_bytes():
        raise StackFailed(f"{ref} pins other dependencies (requirements.lock differs): its "
                          "figures would not be its own")
    with tempfile.TemporaryDirectory(prefix="otesse-baseline-") as folder:
        root = Path(folder)
        archive = root / "tree.tar"
        archive.write_bytes(_git("archive", "--format=tar", ref))
        with tarfile.open(archive) as tar:
            # The "data" filter refuses links out of the folder and the like; Pythons before
            # 3.11.4 (Debian 12's 3.11.2, which .venv-bench runs) lack it, and this archive is
            # git's own, of this repository.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, filter="data")
            else:
                tar.extractall(root)  # noqa: S202 - our own commit, see above
        archive.unlink()
        if not (venv / "bin" / "python").exists():
            raise StackFailed(f"{venv} has no Python (make bench-venv)")
        (root / ".venv").symlink_to(venv.resolve())
        yield root
