"""A person in a real browser: sign in, see the consent screen, approve (or deny), and land
on the app's redirect URI with a code. Screenshots of the pages go to ``tests/artifacts/``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from playwright.async_api import BrowserContext, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from otesse.auth.v1 import registry_pb2_grpc
from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from services.common import credentials
from services.common.settings import Env, StoreSettings
from tests.authorize.conftest import App, new_person, register
from tests.e2e.conftest import console_messages
from tests.images import image_bytes
from tests.servers import serve_app

pytestmark = pytest.mark.e2e


@dataclass
class Callback:
    """The app's side: a loopback redirect URI that counts what arrives."""

    url: str = ""
    hits: list[dict[str, list[str]]] = field(default_factory=list)


@dataclass(frozen=True)
class Stack:
    authorize_url: str
    app: App
    callback: Callback


@pytest_asyncio.fixture(scope="module")
async def stack(store_settings: StoreSettings, registry_address: str,
                registry: registry_pb2_grpc.ClientRegistryStub) -> AsyncIterator[Stack]:
    callback = Callback()

    async def landed(request: Request) -> Response:
        callback.hits.append(parse_qs(request.url.query))
        return PlainTextResponse("Signed in to Calendar Sync.")

    async with serve_app(Starlette(routes=[Route("/callback", landed)])) as callback_base:
        callback.url = callback_base + "/callback"
        app = await register(
            registry, name="Calendar Sync", redirect_uris=[callback.url],
            scopes=["bookings:read", "bookings:write", "customers:read"], logo=image_bytes(),
            description="Two-way sync between your Otesse bookings and Google or Outlook "
                        "calendars.")
        settings = replace(AuthorizeSettings.from_env(Env({})), stores=store_settings,
                           registry_addr=registry_address)
        async with serve_app(create_app(settings)) as authorize_url:
            yield Stack(authorize_url, app, callback)


def authorization_url(stack: Stack, state: str) -> str:
    return stack.authorize_url + "/oauth/authorize?" + urlencode({
        "client_id": stack.app.client_id, "redirect_uri": stack.callback.url,
        "response_type": "code", "scope": "bookings:read bookings:write customers:read",
        "state": state, "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"})


async def sign_in_and_reach_consent(page: Page, stack: Stack, email: str, password: str,
                                    shots: str, artifacts_dir: str) -> None:
    await page.goto(authorization_url(stack, state=shots))
    assert urlsplit(page.url).path == "/login"
    await page.get_by_role("heading", name="Sign in to Otesse").wait_for()
    await page.screenshot(path=os.path.join(artifacts_dir, f"login-{shots}.png"), full_page=True)
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Approve").wait_for()
    assert urlsplit(page.url).path == "/oauth/authorize"
    heading = await page.get_by_role("heading", level=1).inner_text()
    assert "Calendar Sync wants to access your Otesse account" in " ".join(heading.split())
    assert await page.get_by_text("See your bookings and their details").is_visible()
    logo = page.locator("img.app-logo")
    assert await logo.evaluate("image => image.naturalWidth") == 64  # the logo really loaded
    await page.screenshot(path=os.path.join(artifacts_dir, f"consent-{shots}.png"),
                          full_page=True)


async def test_sign_in_consent_and_approve_lands_on_the_app_with_a_code(
        desktop: BrowserContext, stack: Stack, pool: asyncpg.Pool, redis: aioredis.Redis,
        redis_prefix: str, artifacts_dir: str) -> None:
    person = await new_person(pool)
    page = await desktop.new_page()
    await sign_in_and_reach_consent(page, stack, person.email, person.password, "desktop",
                                    artifacts_dir)
    before = len(stack.callback.hits)
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Signed in to Calendar Sync.").wait_for()
    landed = urlsplit(page.url)
    assert f"http://{landed.netloc}{landed.path}" == stack.callback.url
    params = parse_qs(landed.query)
    assert params["state"] == ["desktop"]
    assert params["iss"] == ["http://localhost:8000"]
    assert len(stack.callback.hits) == before + 1
    assert stack.callback.hits[-1]["code"] == params["code"]
    key = credentials.authorization_code_key(redis_prefix, params["code"][0])
    assert await redis.exists(key)
    assert not [m for m in console_messages(desktop) if "Content Security Policy" in m]


async def test_on_a_phone_deny_returns_access_denied(
        phone: BrowserContext, stack: Stack, pool: asyncpg.Pool, artifacts_dir: str) -> None:
    person = await new_person(pool)
    page = await phone.new_page()
    await sign_in_and_reach_consent(page, stack, person.email, person.password, "phone",
                                    artifacts_dir)
    # Readable on a phone: nothing wider than the screen.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.get_by_role("button", name="Deny").click()
    await page.get_by_text("Signed in to Calendar Sync.").wait_for()
    params = parse_qs(urlsplit(page.url).query)
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["phone"]
    assert "code" not in params
    assert not [m for m in console_messages(phone) if "Content Security Policy" in m]


async def test_an_unregistered_redirect_uri_shows_an_error_page_and_goes_nowhere(
        desktop: BrowserContext, stack: Stack, artifacts_dir: str) -> None:
    page = await desktop.new_page()
    url = authorization_url(stack, state="evil").replace(
        urlencode({"redirect_uri": stack.callback.url}),
        urlencode({"redirect_uri": "https://evil.example/callback"}))
    response = await page.goto(url)
    assert response is not None and response.status == 400
    assert urlsplit(page.url).path == "/oauth/authorize"
    await page.get_by_role("heading", name="This link can't be used").wait_for()
    await page.screenshot(path=os.path.join(artifacts_dir, "error-desktop.png"))
