"""An app's security events on its settings page, in headless Chromium through the gateway of
the whole running stack: a developer registers an app and rotates its secret; a user approves
it; a stolen refresh token comes back, and the grant is revoked. The app's page then lists those
events, newest first, with who did each (the developer as "You", the user anonymous) and from
where — on a desktop and on a phone, with no script and no CSP complaint. Another signed-in
user gets the app's 404. Screenshots: ``tests/artifacts/settings-app-events-*.png``."""

from __future__ import annotations

import os
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.e2e.conftest import PHONE, console_messages
from tests.integration.people import FormBrowser, Person, callback_params, new_person
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]
pytestmark = pytest.mark.e2e

APPS = "/settings/integrations/oauth-apps"
CALLBACK = "http://127.0.0.1:8765/callback"
# Where the developer's browser, the user's and the app's server are, as the load balancer
# in front of the gateway says.
DEVELOPER_IP = "203.0.113.40"
USER_IP = "198.51.100.77"
APP_IP = "192.0.2.15"


def shot(artifacts_dir: str, name: str) -> str:
    return os.path.join(artifacts_dir, f"settings-app-events-{name}.png")


async def sign_in_at(page: Page, stack: Stack, path: str, person: Person) -> None:
    await page.goto(stack.gateway + path)
    assert urlsplit(page.url).path == "/login"
    await page.get_by_label("Email address").fill(person.email)
    await page.get_by_label("Password").fill(person.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(stack.gateway + path)


async def test_an_app_page_shows_its_security_events_to_its_owner(
        desktop: BrowserContext, chromium: Browser, stack: Stack, pool: asyncpg.Pool,
        artifacts_dir: str) -> None:
    await desktop.set_extra_http_headers({"X-Forwarded-For": DEVELOPER_IP})
    developer = await new_person(pool)
    page = await desktop.new_page()
    await sign_in_at(page, stack, APPS, developer)
    await page.get_by_role("link", name="Register App").click()
    await page.get_by_label("App name").fill("Harbour Rota")
    await page.get_by_label("Redirect URIs").fill(CALLBACK)
    await page.get_by_label("See your bookings and their details").check()
    await page.get_by_role("button", name="Register App").click()
    client_id = await page.locator("#client_id").input_value()
    await page.get_by_role("link", name="Done").click()
    await page.get_by_role("button", name="Generate a new secret").click()
    secret = await page.locator("#client_secret").input_value()

    # A user approves the app, which then gets tokens; one of its refresh tokens is stolen
    # and comes back after it was used.
    user = await new_person(pool)
    async with FormBrowser(stack.gateway) as browser:
        browser.http.headers.update({"X-Forwarded-For": USER_IP})
        code = callback_params(await browser.authorize(
            stack.gateway + "/oauth/authorize?" + urlencode({
                "client_id": client_id, "redirect_uri": CALLBACK, "response_type": "code",
                "scope": "bookings:read", "state": "s"}), user))["code"]
        async with httpx.AsyncClient(base_url=stack.gateway, auth=(client_id, secret),
                                     headers={"X-Forwarded-For": APP_IP}) as app:
            first = (await app.post("/oauth/token", data={
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": CALLBACK})).json()
            second = (await app.post("/oauth/token", data={
                "grant_type": "refresh_token",
                "refresh_token": first["refresh_token"]})).json()
            await app.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
            stolen = await app.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
            assert stolen.json()["error"] == "invalid_grant"

    await page.goto(stack.gateway + f"{APPS}/{client_id}")
    events = page.get_by_role("region", name="Security events")
    rows = events.locator("tbody tr")
    await rows.first.wait_for()
    texts = {" ".join((await row.locator(".event-label").inner_text()).split()):
             " ".join((await row.inner_text()).split()) for row in await rows.all()}
    labels = list(texts)
    # Newest first; the theft and the revocation it caused share one transaction's time.
    assert set(labels[:2]) == {"Access revoked", "Used refresh token presented again"}
    assert labels[2:] == ["Access approved", "Client secret rotated", "App registered"]
    assert "Otesse, automatically" in texts["Access revoked"]
    assert "a used refresh token came back" in texts["Access revoked"]
    assert "Your app" in texts["Used refresh token presented again"]
    assert all(APP_IP in texts[label] for label in labels[:2])
    assert "A user" in texts["Access approved"] and USER_IP not in " ".join(texts.values())
    assert all("You" in texts[label] and DEVELOPER_IP in texts[label]
               for label in labels[3:])
    assert await events.locator("tr.event-alert").count() == 1
    await events.scroll_into_view_if_needed()
    await page.screenshot(path=shot(artifacts_dir, "desktop"), full_page=True)
    assert secret not in await page.content()

    phone = await chromium.new_context(**PHONE)
    try:
        small = await phone.new_page()
        await sign_in_at(small, stack, f"{APPS}/{client_id}", developer)
        await small.get_by_role("region", name="Security events").locator(
            "tbody tr").first.wait_for()
        assert await small.evaluate("document.documentElement.scrollWidth") <= 390
        await small.get_by_role("heading", name="Security events").scroll_into_view_if_needed()
        await small.screenshot(path=shot(artifacts_dir, "phone"), full_page=True)
        assert not [m for m in console_messages(phone) if "Content Security Policy" in m]
    finally:
        await phone.close()

    # The user of the app, signed in, cannot see its events: the app's own 404.
    stranger = await chromium.new_context()
    try:
        visit = await stranger.new_page()
        await sign_in_at(visit, stack, APPS, user)
        response = await visit.goto(stack.gateway + f"{APPS}/{client_id}")
        assert response is not None and response.status == 404
        assert await visit.get_by_role("region", name="Security events").count() == 0
    finally:
        await stranger.close()
    assert not [m for m in console_messages(desktop) if "Content Security Policy" in m]
