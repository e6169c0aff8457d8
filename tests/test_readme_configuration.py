"""The README's configuration tables and the settings the code reads say the same thing: every
``OTESSE_…`` variable a service or the CLI reads has a row, and every row of the services'
tables names a variable something reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"OTESSE_[A-Z0-9_]+")


def read_by_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        names.update(re.findall(r"\"(OTESSE_[A-Z0-9_]+)\"", path.read_text()))
    return names


def service_table_rows() -> set[str]:
    """The names in the first column of the tables from ``## Configuration`` up to the local
    tooling's (which ``make run``, ``make test`` and compose read, not the services)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("Local tooling only:", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `OTESSE_"):
            names.update(_NAME.findall(line.split("|")[1]))
    return names


def test_every_setting_read_has_a_row_and_every_row_is_read() -> None:
    code, documented = read_by_code(), service_table_rows()
    assert code - documented == set(), "settings missing from the README's tables"
    assert documented - code == set(), "README rows that nothing reads"
