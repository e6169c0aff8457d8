"""Fixtures of the settings-page tests (a pytest plugin; never import it directly): the
authorize app wired to a real token service, and two signed-in people, ``alice`` and
``mallory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest_asyncio

from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from services.common.settings import StoreSettings
from tests.authorize.settings_stack import Pages, User, signed_in
from tests.servers import serve_app
from tests.token.conftest import make_settings, running


@pytest_asyncio.fixture(scope="session")
async def pages(authorize_settings: AuthorizeSettings, store_settings: StoreSettings,
                registry_address: str) -> AsyncIterator[Pages]:
    async with running(make_settings(store_settings, registry_address)) as token:
        settings = replace(authorize_settings, token_addr=f"127.0.0.1:{token.grpc_port}")
        async with serve_app(create_app(settings)) as url:
            yield Pages(url, token)


@pytest_asyncio.fixture
async def alice(pages: Pages, pool: asyncpg.Pool) -> AsyncIterator[User]:
    async with signed_in(pages, pool) as user:
        yield user


@pytest_asyncio.fixture
async def mallory(pages: Pages, pool: asyncpg.Pool) -> AsyncIterator[User]:
    async with signed_in(pages, pool) as user:
        yield user
