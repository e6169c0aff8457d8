"""A developer and a user in headless Chromium, through the gateway of the whole running stack:
register an app with a logo on the OAuth Apps page, see its secret once (a reload or Back does
not show it again), run the authorization flow with the new credentials and see the logo on the
consent screen, exchange the code, then revoke the app from Authorized apps and watch its token
die in ``ValidateToken`` within a second. Screenshots of every page, on desktop and on a phone,
go to ``tests/artifacts/settings-*.png``."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from PIL import Image, ImageDraw
from playwright.async_api import Browser, BrowserContext, FilePayload, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from otesse.auth.v1 import token_pb2
from tests.e2e.conftest import DESKTOP, console_messages
from tests.integration.people import Person, callback_params, new_person
from tests.integration.resources import Resources
from tests.integration.stack import Stack
from tests.servers import serve_app

pytest_plugins = ["tests.integration.fixtures"]
pytestmark = pytest.mark.e2e

APPS = "/settings/integrations/oauth-apps"
AUTHORIZED = "/settings/authorized-apps"
SCOPE = "bookings:read customers:read"


def logo_png() -> bytes:
    """A 128×128 logo that looks like one: a rounded badge with a mark."""
    image = Image.new("RGB", (128, 128), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((8, 8, 120, 120), radius=26, fill=(18, 140, 126))
    draw.ellipse((36, 36, 92, 92), outline=(255, 255, 255), width=10)
    draw.rectangle((60, 20, 68, 44), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest_asyncio.fixture(scope="module")
async def callback_url() -> AsyncIterator[str]:
    async def landed(request: Request) -> Response:
        return PlainTextResponse("Connected to Tide Calendar.")

    async with serve_app(Starlette(routes=[Route("/callback", landed)])) as base:
        yield base + "/callback"


def upload(name: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": "image/png", "buffer": data}


def shot(artifacts_dir: str, name: str) -> str:
    return os.path.join(artifacts_dir, f"settings-{name}.png")


async def sign_in_at(page: Page, stack: Stack, path: str, person: Person) -> None:
    await page.goto(stack.gateway + path)
    # Signed out: the login page, which comes back here afterwards.
    assert urlsplit(page.url).path == "/login"
    await page.get_by_label("Email address").fill(person.email)
    await page.get_by_label("Password").fill(person.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(stack.gateway + path)


async def fits(page: Page, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def test_register_authorize_and_revoke_through_the_gateway(
        desktop: BrowserContext, chromium: Browser, stack: Stack, pool: asyncpg.Pool,
        apis: Resources, callback_url: str, artifacts_dir: str) -> None:
    developer = await new_person(pool)
    page = await desktop.new_page()
    await sign_in_at(page, stack, APPS, developer)
    await page.get_by_role("heading", name="No apps yet").wait_for()
    await page.screenshot(path=shot(artifacts_dir, "oauth-apps-empty-desktop"), full_page=True)

    # Register App, first with a mistake: the error is shown by the field, the rest is kept.
    await page.get_by_role("link", name="Register App").click()
    await page.get_by_role("heading", name="Register App").wait_for()
    await page.get_by_label("App name").fill("Tide Calendar")
    await page.get_by_label("Description").fill(
        "Keeps your Otesse bookings in step with your Google or Outlook calendar.")
    await page.get_by_label("Redirect URIs").fill("http://tide.example.com/callback")
    await page.get_by_label("See your bookings and their details").check()
    await page.get_by_label("See your customers and their contact details").check()
    await page.get_by_role("button", name="Register App").click()
    error = page.locator("#redirect_uris-error")
    await error.wait_for()
    assert "must use https" in await error.inner_text()
    assert await page.get_by_label("App name").input_value() == "Tide Calendar"
    await page.screenshot(path=shot(artifacts_dir, "register-error-desktop"), full_page=True)

    await page.get_by_label("Redirect URIs").fill(callback_url)
    await page.set_input_files("#logo", files=upload("tide.png", logo_png()))
    await page.screenshot(path=shot(artifacts_dir, "register-desktop"), full_page=True)
    await page.get_by_role("button", name="Register App").click()

    # The credentials, once, with working copy buttons (our script, allowed by the CSP).
    await page.get_by_role("heading", name="Tide Calendar is registered").wait_for()
    client_id = await page.locator("#client_id").input_value()
    client_secret = await page.locator("#client_secret").input_value()
    assert client_id.startswith("otesse_ci_") and client_secret.startswith("otesse_cs_")
    assert client_secret not in page.url
    await page.get_by_text("You won't see this secret again").wait_for()
    copy = page.get_by_role("button", name="Copy").nth(1)
    await copy.click()
    await page.get_by_role("button", name="Copied").wait_for()
    await page.screenshot(path=shot(artifacts_dir, "credentials-desktop"), full_page=True)
    credentials_url = page.url
    await page.reload()
    await page.get_by_role("heading", name="This secret was already shown").wait_for()
    assert client_secret not in await page.content()
    await page.screenshot(path=shot(artifacts_dir, "credentials-gone-desktop"), full_page=True)
    await page.goto(stack.gateway + APPS)
    await page.go_back()
    assert page.url == credentials_url
    assert client_secret not in await page.content()

    # The list, then the app's own page.
    await page.goto(stack.gateway + APPS)
    row = page.locator(".app-row", has_text="Tide Calendar")
    assert await row.locator("img").evaluate("image => image.naturalWidth") == 128
    await page.screenshot(path=shot(artifacts_dir, "oauth-apps-desktop"), full_page=True)
    await row.get_by_role("link", name="Tide Calendar").click()
    await page.get_by_role("heading", name="Tide Calendar", level=1).wait_for()
    await page.screenshot(path=shot(artifacts_dir, "edit-desktop"), full_page=True)
    await page.get_by_role("link", name="Delete app…").click()
    await page.get_by_role("heading", name="Delete Tide Calendar?").wait_for()
    await page.screenshot(path=shot(artifacts_dir, "delete-desktop"), full_page=True)
    await page.get_by_role("link", name="Cancel").click()

    # A user of the app authorizes it: the consent screen shows the uploaded logo.
    user = await new_person(pool)
    browser = await chromium.new_context(**DESKTOP)
    try:
        person_page = await browser.new_page()
        verifier, challenge = pkce_pair()
        await person_page.goto(stack.gateway + "/oauth/authorize?" + urlencode({
            "client_id": client_id, "redirect_uri": callback_url, "response_type": "code",
            "scope": SCOPE, "state": "tide", "code_challenge": challenge,
            "code_challenge_method": "S256"}))
        await person_page.get_by_label("Email address").fill(user.email)
        await person_page.get_by_label("Password").fill(user.password)
        await person_page.get_by_role("button", name="Sign in").click()
        await person_page.get_by_role("button", name="Approve").wait_for()
        logo = person_page.locator("img.app-logo")
        assert await logo.evaluate("image => image.naturalWidth") == 128
        assert (await logo.get_attribute("src") or "").startswith(f"/apps/{client_id}/logo")
        await person_page.screenshot(path=shot(artifacts_dir, "consent-with-logo-desktop"),
                                     full_page=True)
        await person_page.get_by_role("button", name="Approve").click()
        await person_page.get_by_text("Connected to Tide Calendar.").wait_for()
        params = callback_params(person_page.url)
        async with httpx.AsyncClient() as http:
            exchanged = await http.post(stack.gateway + "/oauth/token", json={
                "grant_type": "authorization_code", "code": params["code"],
                "redirect_uri": callback_url, "client_id": client_id,
                "client_secret": client_secret, "code_verifier": verifier})
            assert exchanged.status_code == 200, exchanged.text
            tokens = exchanged.json()
            logo_response = await http.get(stack.gateway + f"/apps/{client_id}/logo")
        assert logo_response.headers["content-type"] == "image/png"
        assert logo_response.headers["x-content-type-options"] == "nosniff"
        assert (await apis.validate(tokens["access_token"])).active

        # Authorized apps: the app, its logo, the scopes in plain words; Revoke kills it.
        await person_page.goto(stack.gateway + AUTHORIZED)
        entry = person_page.locator(".app-row", has_text="Tide Calendar")
        await entry.get_by_text("See your customers and their contact details").wait_for()
        assert await entry.locator("img").evaluate("image => image.naturalWidth") == 128
        await person_page.screenshot(path=shot(artifacts_dir, "authorized-apps-desktop"),
                                     full_page=True)
        await entry.get_by_role("button", name="Revoke Tide Calendar").click()
        revoked_at = time.monotonic()
        verdict = await apis.validate(tokens["access_token"])
        while verdict.active and time.monotonic() - revoked_at < 1.0:
            verdict = await apis.validate(tokens["access_token"])
        assert not verdict.active
        assert verdict.reason == token_pb2.VALIDATION_REASON_REVOKED
        assert time.monotonic() - revoked_at < 1.0
        await person_page.get_by_text("Access revoked").wait_for()
        await person_page.get_by_role("heading", name="No authorized apps").wait_for()
        await person_page.screenshot(path=shot(artifacts_dir, "authorized-apps-empty-desktop"),
                                     full_page=True)
        api = await apis.bookings(tokens["access_token"])
        assert api.status_code == 401
        assert not [m for m in console_messages(desktop) if "Content Security Policy" in m]
    finally:
        await browser.close()


async def test_the_pages_on_a_phone(phone: BrowserContext, stack: Stack, pool: asyncpg.Pool,
                                    callback_url: str, artifacts_dir: str) -> None:
    developer = await new_person(pool)
    page = await phone.new_page()
    await sign_in_at(page, stack, APPS, developer)
    await page.get_by_role("heading", name="No apps yet").wait_for()
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "oauth-apps-empty-phone"), full_page=True)
    await page.get_by_role("link", name="Register App").click()
    await page.get_by_role("button", name="Register App").click()  # nothing filled in
    await page.locator("#name-error").wait_for()
    assert await page.locator("#scopes-error").inner_text() == (
        "Choose at least one scope your app may request.")
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "register-errors-phone"), full_page=True)
    await page.get_by_label("App name").fill("Pocket Planner with a rather long name")
    await page.get_by_label("Redirect URIs").fill(callback_url)
    await page.get_by_label("See your bookings and their details").check()
    await page.set_input_files("#logo", files=upload("p.png", logo_png()))
    await page.get_by_role("button", name="Register App").click()
    await page.locator("#client_secret").wait_for()
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "credentials-phone"), full_page=True)
    await page.get_by_role("link", name="Done").click()
    await page.get_by_role("button", name="Generate a new secret").wait_for()
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "edit-phone"), full_page=True)
    await page.get_by_text("Stop the current secret now").click()
    await page.get_by_role("button", name="Generate a new secret").click()
    await page.get_by_role("heading", name="A new secret for Pocket Planner with a rather "
                                           "long name").wait_for()
    await page.get_by_text("The previous secret has stopped working.").wait_for()
    client_id = await page.locator("#client_id").input_value()
    await page.goto(stack.gateway + APPS)
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "oauth-apps-phone"), full_page=True)
    await page.goto(stack.gateway + AUTHORIZED)
    await page.get_by_role("heading", name="No authorized apps").wait_for()
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "authorized-apps-empty-phone"),
                          full_page=True)
    # The developer uses the app too: consent on the phone, then it is listed.
    await page.goto(stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": client_id, "redirect_uri": callback_url, "response_type": "code",
        "scope": "bookings:read", "state": "phone"}))
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Connected to Tide Calendar.").wait_for()
    await page.goto(stack.gateway + AUTHORIZED)
    await page.get_by_role("button", name="Revoke Pocket Planner with a rather long name") \
        .wait_for()
    await fits(page, 390)
    await page.screenshot(path=shot(artifacts_dir, "authorized-apps-phone"), full_page=True)
    assert not [m for m in console_messages(phone) if "Content Security Policy" in m]


async def test_a_20_mb_logo_through_the_gateway_is_a_413_page(
        desktop: BrowserContext, stack: Stack, pool: asyncpg.Pool, artifacts_dir: str,
        tmp_path: Path) -> None:
    developer = await new_person(pool)
    page = await desktop.new_page()
    await sign_in_at(page, stack, APPS + "/new", developer)
    await page.get_by_label("App name").fill("Huge logo")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")
        file.truncate(20_000_000)
    await page.set_input_files("#logo", files=huge)
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Register App").click()
    response = await answer.value
    assert response.status == 413
    await page.get_by_role("heading", name="Request too large").wait_for()
    assert "too large" in await page.content()
    await page.screenshot(path=shot(artifacts_dir, "upload-too-large-desktop"), full_page=True)
    await page.goto(stack.gateway + APPS)
    await page.get_by_role("heading", name="No apps yet").wait_for()
