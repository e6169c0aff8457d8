"""Headers on every page, and the cookie outside plain-http development."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import pytest_asyncio

from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from tests.authorize.conftest import App, Person, authorize_params, csrf_token, fresh_ip
from tests.servers import serve_app

PAGES = [
    ("login page", "GET", "/login"),
    ("home redirect", "GET", "/"),
    ("unknown page", "GET", "/nope"),
    ("wrong method", "DELETE", "/login"),
    ("bad client page", "GET", "/oauth/authorize?client_id=otesse_ci_unknown"),
    ("decision without a form", "POST", "/oauth/authorize/decision"),
    ("logout without a form", "POST", "/logout"),
]


@pytest.mark.parametrize(("method", "path"), [p[1:] for p in PAGES], ids=[p[0] for p in PAGES])
async def test_every_page_forbids_framing_sniffing_referrers_and_caching(
        browser: httpx.AsyncClient, method: str, path: str) -> None:
    response = await browser.request(method, path)
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    for directive in ("default-src 'none'", "style-src 'self'", "img-src 'self' data:",
                      "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in csp
    assert response.status_code < 500
    assert "Traceback" not in response.text


async def test_the_stylesheet_is_cacheable_and_the_page_names_its_version(
        browser: httpx.AsyncClient) -> None:
    page = await browser.get("/login")
    href = page.text.split('rel="stylesheet" href="')[1].split('"')[0]
    assert href.startswith("/static/otesse.css?v=")
    css = await browser.get(href)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "max-age" in css.headers["cache-control"]


@pytest_asyncio.fixture(scope="module")
async def production_url(authorize_settings: AuthorizeSettings) -> AsyncIterator[str]:
    settings = replace(authorize_settings, issuer="https://auth.otesse.com")
    async with serve_app(create_app(settings)) as url:
        yield url


async def test_outside_plain_http_the_cookie_is_secure_and_host_only(
        production_url: str, person: Person, app: App) -> None:
    async with httpx.AsyncClient(base_url=production_url) as client:
        form = await client.get("/login")
        cookie = form.headers["set-cookie"]
        assert cookie.startswith("__Host-otesse_session=")
        lowered = cookie.lower()
        assert "; secure" in lowered and "; httponly" in lowered
        assert "samesite=lax" in lowered and "path=/" in lowered and "domain" not in lowered
        # httpx will not send a Secure cookie over http, so hand it over as a header.
        session = cookie.split(";")[0]
        signed_in = await client.post("/login", data={
            "email": person.email, "password": person.password,
            "csrf_token": csrf_token(form.text)},
            headers={"Cookie": session, "X-Forwarded-For": fresh_ip()})
        assert signed_in.status_code == 303
        new_session = signed_in.headers["set-cookie"].split(";")[0]
        assert new_session.startswith("__Host-otesse_session=") and new_session != session
        error = await client.get("/oauth/authorize", params=authorize_params(
            app, response_type="token"), headers={"Cookie": new_session})
        assert "iss=https%3A%2F%2Fauth.otesse.com" in error.headers["location"]
