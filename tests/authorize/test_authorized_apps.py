"""Settings > Authorized apps over real HTTP: every app holding access for me, and Revoke, which
removes the remembered consent and every token of the grant (inactive in ``ValidateToken``
within a second). Also: the settings pages while the registry or the token service is down."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import asyncpg
import httpx
import pytest
import pytest_asyncio

from otesse.auth.v1 import token_pb2
from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from tests.authorize.settings_stack import (
    APPS,
    CALLBACK,
    Pages,
    User,
    grant_tokens,
    register,
    shown_secret,
    signed_in,
)
from tests.images import image_bytes
from tests.proxy import FaultProxy
from tests.servers import serve_app

pytest_plugins = ["tests.authorize.settings_fixtures"]
PAGE = "/settings/authorized-apps"
_ROW = re.compile(r'<li class="app-row app-row-access">(.*?)</form>\s*</li>', re.S)


def rows(page: str) -> list[str]:
    return _ROW.findall(page)


async def validate(pages: Pages, access_token: str) -> token_pb2.ValidateTokenResponse:
    response: token_pb2.ValidateTokenResponse = await pages.token.grpc.ValidateToken(
        token_pb2.ValidateTokenRequest(token=access_token))
    return response


async def test_no_authorized_apps_is_an_empty_state(alice: User) -> None:
    page = await alice.page(PAGE)
    assert page.status_code == 200
    assert "No authorized apps" in page.text and rows(page.text) == []
    assert page.headers["cache-control"] == "no-store"
    assert 'aria-current="page">Authorized apps' in page.text


async def test_an_authorized_app_shows_logo_scopes_and_dates(alice: User, mallory: User,
                                                             pages: Pages) -> None:
    app = await register(mallory, name="Bookings Pro", logo=image_bytes(),
                         scopes=["bookings:read", "customers:read", "customers:write"])
    await grant_tokens(alice, pages, app, scope="bookings:read customers:read")
    page = await alice.page(PAGE)
    [row] = rows(page.text)
    assert "Bookings Pro" in row
    assert f'src="/apps/{app.client_id}/logo?v=' in row
    assert "See your bookings and their details" in row
    assert "See your customers and their contact details" in row
    assert "customers:write" not in row  # allowed to the app, never granted by alice
    today = time.strftime("%-d %b %Y", time.gmtime())
    assert f"First authorized <time datetime=\"{time.strftime('%Y-%m-%d', time.gmtime())}" in row
    assert today in row and "Last used" in row
    assert f'action="{PAGE}/{app.client_id}/revoke"' in row
    # The owner of the app is not a user of it: nothing listed for her.
    assert rows((await mallory.page(PAGE)).text) == []


async def test_revoke_kills_every_token_and_forgets_the_consent(alice: User, mallory: User,
                                                                 pages: Pages) -> None:
    app = await register(mallory, name="Sync")
    first = await grant_tokens(alice, pages, app)
    second = await grant_tokens(alice, pages, app)  # consent remembered: no screen this time
    theirs = await grant_tokens(mallory, pages, app)
    for body in (first, second, theirs):
        assert (await validate(pages, body["access_token"])).active
    assert len(rows((await alice.page(PAGE)).text)) == 1  # one app, however many grants
    response = await alice.post(f"{PAGE}/{app.client_id}/revoke")
    revoked_at = time.monotonic()
    assert response.status_code == 303 and response.headers["location"] == f"{PAGE}?revoked=1"
    for body in (first, second):
        verdict = await validate(pages, body["access_token"])
        assert not verdict.active
        assert verdict.reason == token_pb2.VALIDATION_REASON_REVOKED
    assert time.monotonic() - revoked_at < 1.0
    # Another user's access to the same app is untouched.
    assert (await validate(pages, theirs["access_token"])).active
    refreshed = await pages.token.http.post("/oauth/token", json={
        "grant_type": "refresh_token", "refresh_token": first["refresh_token"],
        "client_id": app.client_id, "client_secret": app.client_secret})
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    page = await alice.page(response.headers["location"])
    assert rows(page.text) == [] and "Access revoked" in page.text
    # The consent is gone: the next authorization asks again.
    again = await alice.http.get("/oauth/authorize", params={
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "bookings:read", "state": "s"})
    assert again.status_code == 200 and 'name="decision"' in again.text


async def test_a_consent_without_tokens_is_listed_and_revocable(alice: User, mallory: User,
                                                               pages: Pages,
                                                               pool: asyncpg.Pool) -> None:
    app = await register(mallory, name="Remembered")
    await pool.execute("INSERT INTO authorize.consents (user_id, client_id, scopes)"
                       " VALUES ($1::text::uuid, $2, $3)", alice.person.user_id, app.client_id,
                       ["bookings:read"])
    [row] = rows((await alice.page(PAGE)).text)
    assert "Remembered" in row and "Not used yet" in row
    assert (await alice.post(f"{PAGE}/{app.client_id}/revoke")).status_code == 303
    assert await pool.fetchval("SELECT count(*) FROM authorize.consents WHERE user_id ="
                               " $1::text::uuid", alice.person.user_id) == 0


@pytest.mark.parametrize("client_id", ["otesse_ci_unknown", "bad%00id", "x" * 200],
                         ids=["fails quietly because the app is unknown",
                              "fails because the id has a NUL",
                              "fails because the id is too long"])
async def test_revoking_a_strange_id_changes_nothing(alice: User, client_id: str) -> None:
    response = await alice.post(f"{PAGE}/{client_id}/revoke")
    assert response.status_code in (303, 400)
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", [PAGE, APPS], ids=["authorized apps", "oauth apps"])
async def test_the_header_nav_signs_out_with_csrf(alice: User, path: str) -> None:
    page = await alice.page(path)
    assert 'href="/settings/integrations/oauth-apps"' in page.text
    assert 'href="/settings/authorized-apps"' in page.text
    response = await alice.post("/logout")
    assert response.status_code == 303
    assert (await alice.http.get(path)).status_code == 302


async def test_a_disabled_user_is_signed_out_of_the_settings_pages(alice: User,
                                                                 pool: asyncpg.Pool) -> None:
    assert (await alice.http.get(PAGE)).status_code == 200
    await pool.execute("UPDATE authorize.users SET disabled_at = now() WHERE email = $1",
                       alice.person.email)
    for path in (PAGE, APPS):
        response = await alice.http.get(path)
        assert response.status_code == 302 and response.headers["location"].startswith(
            "/login?next=")
    refused = await alice.post(f"{APPS}/new", {"name": "x"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")


async def test_no_secret_reaches_a_log_line(alice: User, caplog: pytest.LogCaptureFixture,
                                            ) -> None:
    caplog.set_level(logging.DEBUG)
    app = await register(alice, name="Quiet")
    rotated = await alice.post(f"{APPS}/{app.client_id}/rotate-secret", {"overlap": "none"})
    page = await alice.page(rotated.headers["location"])
    new_secret = shown_secret(page.text)
    assert app.client_secret and new_secret
    # The access log saw these requests (so this test reads the real log lines).
    assert any("/credentials" in str(r.__dict__) for r in caplog.records)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert app.client_secret not in logged and new_secret not in logged
    assert "otesse_cs_" not in logged


# --- outages ---------------------------------------------------------------------------------

@pytest_asyncio.fixture(scope="module")
async def cut_off(authorize_settings: AuthorizeSettings, pages: Pages,
                  ) -> AsyncIterator[tuple[str, dict[str, FaultProxy]]]:
    """The authorize app reaching the registry and the token service through proxies."""
    host, port = authorize_settings.registry_addr.rsplit(":", 1)
    proxies = {"registry": FaultProxy(host, int(port)),
               "token": FaultProxy("127.0.0.1", pages.token.grpc_port)}
    for proxy in proxies.values():
        await proxy.start()
    settings = replace(authorize_settings,
                       registry_addr=f"127.0.0.1:{proxies['registry'].port}",
                       token_addr=f"127.0.0.1:{proxies['token'].port}")
    async with serve_app(create_app(settings)) as url:
        yield url, proxies
    for proxy in proxies.values():
        await proxy.cut()


async def _until_ok(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    end = time.monotonic() + 8.0
    while True:
        response = await call()
        if response.status_code != 503 or time.monotonic() > end:
            return response
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(("dependency", "path"), [
    ("registry", APPS), ("registry", f"{APPS}/new"), ("registry", PAGE), ("token", PAGE)],
    ids=["registry down: app list", "registry down: register", "registry down: authorized",
         "token service down: authorized"])
async def test_a_peer_down_is_a_503_page_and_the_page_comes_back(
        cut_off: tuple[str, dict[str, FaultProxy]], pool: asyncpg.Pool, dependency: str,
        path: str) -> None:
    url, proxies = cut_off
    pages = Pages(url, None)  # type: ignore[arg-type]
    async with signed_in(pages, pool) as user:
        if path == f"{APPS}/new":
            await user.page(path)

        async def load() -> httpx.Response:
            if path == f"{APPS}/new":
                return await user.post(path, {"name": "X", "redirect_uris": CALLBACK,
                                              "scope": "bookings:read"})
            return await user.http.get(path)

        if path == PAGE:
            # An app the user authorized, so the page needs the registry for its name.
            await pool.execute("INSERT INTO authorize.consents (user_id, client_id, scopes)"
                               " VALUES ($1::text::uuid, 'otesse_ci_gone', '{bookings:read}')",
                               user.person.user_id)
        assert (await load()).status_code in (200, 303)
        await proxies[dependency].cut()
        try:
            down = await load()
            assert down.status_code == 503
            assert "Otesse is temporarily unavailable" in down.text
            assert down.headers["retry-after"] and "Traceback" not in down.text
        finally:
            await proxies[dependency].restore()
        assert (await _until_ok(load)).status_code in (200, 303)


async def test_a_cross_site_prompt_login_signs_nobody_out(alice: User, pages: Pages) -> None:
    app = await register(alice)
    await grant_tokens(alice, pages, app)
    session = alice.http.cookies["otesse_session"]
    # Any site can send the browser here: a link, or a top-level navigation by script.
    shown = await alice.http.get("/oauth/authorize", params={
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "bookings:read", "state": "s", "prompt": "login"})
    assert shown.status_code == 302
    login_page = await alice.page(shown.headers["location"])
    assert login_page.status_code == 200 and 'name="password"' in login_page.text
    # Even a failed sign-in there leaves the session as it was.
    failed = await alice.post("/login", {"email": alice.person.email, "password": "wrong"})
    assert failed.status_code == 400

    # Still signed in, with the same session, on every settings page.
    assert alice.http.cookies["otesse_session"] == session
    listed = await alice.page(PAGE)
    assert listed.status_code == 200 and app.client_id in listed.text
    assert (await alice.page(APPS)).status_code == 200
    revoked = await alice.post(f"{PAGE}/{app.client_id}/revoke")
    assert revoked.status_code == 303
