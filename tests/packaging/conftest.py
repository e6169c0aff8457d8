"""The built wheel and the runtime wheelhouse, once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.install import build_wheel, wheelhouse


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def wheels() -> Path:
    return wheelhouse()
