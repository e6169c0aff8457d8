"""The wheel holds every file of the packages: what an editable install reads from the checkout,
the installed service must find in site-packages (templates, static assets, SQL migrations,
generated ``.pyi`` stubs and ``py.typed``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.packaging.install import data_files, source_files


def test_the_listing_finds_the_files_the_services_read() -> None:
    found = set(data_files())
    # One of each kind the code opens at run time; if the listing missed these, it would
    # prove nothing about the rest.
    for name in ("services/authorize/static/copy.js", "services/authorize/static/otesse.css",
                 "services/authorize/templates/consent.html",
                 "services/token/migrations/0001_tokens.sql", "otesse/py.typed"):
        assert name in found, name


def test_every_file_of_the_packages_is_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = [name for name in source_files() if name not in shipped]
    assert not missing, f"not in {wheel.name}: {missing}"


def test_the_wheel_ships_no_tests_and_no_bytecode(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    stray = [name for name in names if name.startswith(("tests/", "bench/", "scripts/"))
             or "__pycache__" in name or name.endswith(".pyc")]
    assert not stray, stray
