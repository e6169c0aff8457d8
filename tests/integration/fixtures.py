"""Session-wide fixtures of the end-to-end tests, a pytest plugin so that ``tests/integration``
and ``tests/e2e`` share one stack: ``pytest_plugins = ["tests.integration.fixtures"]``.

Nothing may import this module directly (pytest must import it first to rewrite its asserts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.integration.resources import Resources, resources
from tests.integration.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[Stack]:
    """Every service as its own process, stopped with SIGTERM at the end (each must exit 0)."""
    with running_stack(test_env, tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest_asyncio.fixture(scope="session")
async def metadata(stack: Stack) -> dict[str, Any]:
    """The server metadata (RFC 8414), read through the gateway as a client library would."""
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.gateway + "/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    assert document["issuer"] == stack.issuer
    return document


@pytest_asyncio.fixture(scope="session")
async def apis(stack: Stack) -> AsyncIterator[Resources]:
    async with resources(stack) as opened:
        yield opened
