"""A store or the registry going down: a clear 503 page, and recovery without a restart.

Each dependency is reached through a :class:`FaultProxy` that the test cuts (the listener
closes and every connection drops, like a crashed server) and restores.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio

from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from services.common.settings import Secret
from tests.authorize.conftest import App, Person, authorize_params, sign_in
from tests.conftest import REDIS_URL
from tests.proxy import FaultProxy
from tests.servers import serve_app


@dataclass
class Outages:
    url: str
    proxies: dict[str, FaultProxy]


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                     else host))


@pytest_asyncio.fixture(scope="module")
async def outages(authorize_settings: AuthorizeSettings) -> AsyncIterator[Outages]:
    stores = authorize_settings.stores
    registry_host, registry_port = authorize_settings.registry_addr.rsplit(":", 1)
    redis_at, database_at = urlsplit(REDIS_URL), urlsplit(stores.database_url.value)
    proxies = {
        "registry": FaultProxy(registry_host, int(registry_port)),
        "redis": FaultProxy(redis_at.hostname or "127.0.0.1", redis_at.port or 6379),
        "postgres": FaultProxy(database_at.hostname or "127.0.0.1", database_at.port or 5432),
    }
    for proxy in proxies.values():
        await proxy.start()
    settings = replace(
        authorize_settings, registry_addr=f"127.0.0.1:{proxies['registry'].port}",
        client_cache_seconds=0.1,
        stores=replace(stores,
                       redis_url=Secret(_via(REDIS_URL, proxies["redis"].port)),
                       database_url=Secret(_via(stores.database_url.value,
                                                proxies["postgres"].port))))
    async with serve_app(create_app(settings)) as url:
        yield Outages(url, proxies)
    for proxy in proxies.values():
        await proxy.cut()


async def _until_ok(call: Callable[[], Awaitable[httpx.Response]],
                    deadline: float = 8.0) -> httpx.Response:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        response = await call()
        if response.status_code != 503 or loop.time() > end:
            return response
        await asyncio.sleep(0.1)


async def _until_ready(browser: httpx.AsyncClient, deadline: float = 8.0) -> httpx.Response:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        response = await browser.get("/readyz")
        if response.json()["status"] == "ready" or loop.time() > end:
            return response
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("dependency", ["registry", "redis", "postgres"])
async def test_a_dependency_down_is_a_503_page_and_service_resumes(
        outages: Outages, app: App, person: Person, dependency: str) -> None:
    async with httpx.AsyncClient(base_url=outages.url, follow_redirects=False,
                                 timeout=10.0) as browser:
        await sign_in(browser, person)

        async def request_authorization() -> httpx.Response:
            return await browser.get("/oauth/authorize",
                                     params=authorize_params(app, prompt="none"))

        assert (await request_authorization()).status_code == 302
        assert (await _until_ready(browser)).json()["status"] == "ready"
        proxy = outages.proxies[dependency]
        await proxy.cut()
        try:
            await asyncio.sleep(0.15)  # past the client cache
            down = await request_authorization()
            assert down.status_code == 503
            assert "location" not in down.headers
            assert down.headers["content-type"].startswith("text/html")
            assert down.headers["retry-after"]
            assert "Otesse is temporarily unavailable" in down.text
            assert "Traceback" not in down.text
            assert down.headers["x-frame-options"] == "DENY"
            # Every replica shares the dependency: the replica stays in rotation, degraded.
            ready = await browser.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
            assert ready.json()["checks"][dependency] != "ok"
        finally:
            await proxy.restore()
        back = await _until_ok(request_authorization)
        assert back.status_code == 302
        assert "error=" in back.headers["location"] or "code=" in back.headers["location"]
        assert (await _until_ready(browser)).json()["status"] == "ready"
