"""Prints the runtime part of ``requirements.lock`` (hashes kept), for the container image.

The lock pins the runtime and the development dependencies together (``make lock``). The image
needs only what ``[project].dependencies`` in ``pyproject.toml`` pulls in: those packages and,
following the lock's ``# via`` annotations, everything they require. Local index options of the
lock are left out; pip installs the result with ``--require-hashes --no-deps``.

Usage: ``python runtime-requirements.py requirements.lock pyproject.toml > runtime.lock``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Build tools the image's own install needs (``pip install --no-build-isolation .``).
BUILD = {"setuptools", "wheel"}
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """``{name: (the entry's lines, the names it is required by)}``."""
    entries: dict[str, tuple[str, set[str]]] = {}
    name: str | None = None
    lines: list[str] = []
    via: set[str] = set()
    in_via = False

    def flush() -> None:
        if name is not None:
            entries[name] = ("\n".join(lines), via)

    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith(("#", "-")):
            flush()
            match = _NAME.match(line)
            name = normalize(match.group(1)) if match else None
            lines, via, in_via = [line], set(), False
        elif name is not None and line.startswith("    --hash"):
            lines.append(line)
        elif name is not None and line.strip().startswith("# via"):
            rest = line.strip()[len("# via"):].strip()
            in_via = not rest
            if rest:
                via.add(rest)
        elif name is not None and in_via and line.strip().startswith("#   "):
            via.add(line.strip()[1:].strip())
    flush()
    return entries


def runtime_roots(pyproject: str) -> set[str]:
    roots = set()
    for requirement in tomllib.loads(pyproject)["project"]["dependencies"]:
        match = _NAME.match(requirement)
        if match:
            roots.add(normalize(match.group(1)))
    return roots


def runtime_closure(entries: dict[str, tuple[str, set[str]]], roots: set[str]) -> set[str]:
    wanted = set(roots) | BUILD
    while True:
        added = {name for name, (_, via) in entries.items()
                 if name not in wanted and any(normalize(v) in wanted for v in via)}
        if not added:
            return wanted & set(entries)
        wanted |= added


def main(lock_path: str, pyproject_path: str) -> None:
    entries = parse_lock(Path(lock_path).read_text())
    wanted = runtime_closure(entries, runtime_roots(Path(pyproject_path).read_text()))
    for name in sorted(wanted):
        print(entries[name][0])


if __name__ == "__main__":
    main(*sys.argv[1:3])
