"""The README's walkthrough, run against the test stack (:mod:`tests.integration.walkthrough`
says how each block is used), and the README's configuration table, checked against the code."""

from __future__ import annotations

import re

import asyncpg

from tests.integration.people import new_person
from tests.integration.stack import Stack
from tests.integration.walkthrough import README, Walkthrough, matches, walk_through

pytest_plugins = ["tests.integration.fixtures"]


async def test_every_walkthrough_command_works_as_the_readme_shows(
        stack: Stack, pool: asyncpg.Pool) -> None:
    await walk_through(Walkthrough(stack), await new_person(pool))


def test_the_matcher_refuses_what_differs() -> None:
    assert matches({"a": "otesse_at_…", "b": [1, "…"]}, {"a": "otesse_at_x", "b": [1, 2]})
    assert not matches({"a": "otesse_at_…"}, {"a": "otesse_rt_x"})
    assert not matches({"a": 1}, {"a": 1, "b": 2})
    assert not matches({"expires_in": 3600}, {"expires_in": "3600"})
    assert not matches([1, 2], [1, 2, 3])


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\bOTESSE_[A-Z0-9_]*[A-Z0-9]\b", text))


def test_the_configuration_table_names_every_setting_and_no_other() -> None:
    root = README.parent
    sources = [*root.glob("services/**/*.py"), *(p for p in (root / "scripts").iterdir()
                                                  if p.is_file())]
    read = set().union(*(_variables(path.read_text(errors="replace")) for path in sources))
    text = README.read_text()
    start = text.index("\n## Configuration")
    documented = _variables(text[start:text.index("\n## ", start + 1)])
    assert read - documented == set(), "settings missing from the README's table"
    assert documented - read == set(), "the README's table names settings nothing reads"
