"""A person in headless Chromium, through the gateway of the whole running stack: the app's
authorization URL (PKCE S256), sign in, approve, land on the app's callback with a code and the
issuer; the app's server exchanges the code, and the token works at the bookings API. Asking
again later skips the consent screen. Screenshots go to ``tests/artifacts/gateway-*.png``."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.e2e.conftest import console_messages
from tests.integration.people import callback_params, new_person, register_app
from tests.integration.resources import Resources
from tests.integration.stack import Stack
from tests.servers import serve_app

pytest_plugins = ["tests.integration.fixtures"]
pytestmark = pytest.mark.e2e

SCOPE = "bookings:read customers:read"


@pytest_asyncio.fixture(scope="module")
async def callback_url() -> AsyncIterator[str]:
    """The app's redirect URI: a real page on loopback."""

    async def landed(request: Request) -> Response:
        return PlainTextResponse("Connected to Acme Scheduler.")

    async with serve_app(Starlette(routes=[Route("/callback", landed)])) as base:
        yield base + "/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def open_authorization(page: Page, stack: Stack, client_id: str, callback_url: str,
                             state: str, challenge: str) -> None:
    await page.goto(f"{stack.gateway}/oauth/authorize?" + urlencode({
        "client_id": client_id, "redirect_uri": callback_url, "response_type": "code",
        "scope": SCOPE, "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256"}))


async def test_a_person_signs_in_and_approves_through_the_gateway(
        desktop: BrowserContext, stack: Stack, pool: asyncpg.Pool, apis: Resources,
        callback_url: str, artifacts_dir: str) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=callback_url, scopes=SCOPE,
                             name="Acme Scheduler")
    person = await new_person(pool)
    verifier, challenge = pkce_pair()
    page = await desktop.new_page()

    await open_authorization(page, stack, app.client_id, callback_url, "first", challenge)
    assert page.url.startswith(stack.gateway + "/login")
    await page.get_by_role("heading", name="Sign in to Otesse").wait_for()
    await page.screenshot(path=os.path.join(artifacts_dir, "gateway-login.png"))
    await page.get_by_label("Email address").fill(person.email)
    await page.get_by_label("Password").fill(person.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Approve").wait_for()
    assert urlsplit(page.url).path == "/oauth/authorize"
    assert await page.get_by_text("Acme Scheduler", exact=False).first.is_visible()
    await page.screenshot(path=os.path.join(artifacts_dir, "gateway-consent.png"))
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Connected to Acme Scheduler.").wait_for()
    await page.screenshot(path=os.path.join(artifacts_dir, "gateway-callback.png"))

    assert page.url.startswith(callback_url + "?")
    params = callback_params(page.url)
    assert (params["state"], params["iss"]) == ("first", stack.issuer)
    async with httpx.AsyncClient() as http:
        exchanged = await http.post(stack.gateway + "/oauth/token", data={
            "grant_type": "authorization_code", "code": params["code"],
            "redirect_uri": callback_url, "code_verifier": verifier},
            auth=(app.client_id, app.client_secret))
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    assert tokens["scope"] == SCOPE
    api = await apis.bookings(tokens["access_token"])
    assert (api.status_code, api.json()["user_id"]) == (200, person.user_id)

    # Already approved for these scopes: the next authorization goes straight back.
    await open_authorization(page, stack, app.client_id, callback_url, "second", challenge)
    await page.get_by_text("Connected to Acme Scheduler.").wait_for()
    again = callback_params(page.url)
    assert again["state"] == "second" and again["code"] != params["code"]
    assert not [m for m in console_messages(desktop) if "Content Security Policy" in m]
