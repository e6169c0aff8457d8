"""NUL bytes, invalid UTF-8 escapes and oversized values in every parameter of every browser
endpoint get a clear 4xx page, never a 500."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.authorize.conftest import App, Person, csrf_token, sign_in

HOSTILE = ["\x00", "%00", "a\x00b", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
           "x" * 10_000]
HOSTILE_IDS = ["nul", "escaped nul text", "embedded nul", "lone surrogate bytes", "10 kB"]


@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("field", ["client_id", "redirect_uri", "scope", "state",
                                   "code_challenge", "prompt", "response_type"])
async def test_authorize_parameters(browser: httpx.AsyncClient, app: App, field: str,
                                    value: str) -> None:
    params = {"client_id": app.client_id, "redirect_uri": app.redirect_uris[0],
              "response_type": "code", "scope": "bookings:read", "state": "s", field: value}
    response = await browser.get("/oauth/authorize", params=params)
    assert response.status_code < 500, response.text[:300]


@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("field", ["email", "password", "next", "csrf_token"])
async def test_login_form(browser: httpx.AsyncClient, field: str, value: str) -> None:
    form_page = await browser.get("/login")
    data = {"email": "someone@example.test", "password": "wrong password",
            "csrf_token": csrf_token(form_page.text), "next": "", field: value}
    response = await browser.post("/login", data=data)
    assert response.status_code < 500, response.text[:300]


@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("path", ["/apps/{}/logo", "/settings/integrations/oauth-apps/{}"])
async def test_ids_in_paths(browser: httpx.AsyncClient, person: Person, path: str,
                            value: str) -> None:
    await sign_in(browser, person)
    response = await browser.get(path.format(quote(value, safe="")))
    assert response.status_code in (400, 404, 414), response.text[:300]


@pytest.mark.parametrize("path", ["/login/", "/settings/authorized-apps/",
                                  "/settings/integrations/oauth-apps/"],
                         ids=["login", "authorized-apps", "oauth-apps"])
async def test_a_stray_slash_is_never_redirected_to_the_host_it_was_sent(
        browser: httpx.AsyncClient, path: str) -> None:
    """Behind the gateway, Host could be an internal address: no absolute URL is built from it."""
    response = await browser.get(path, headers={"Host": "127.0.0.1:9001"})
    assert response.status_code == 404
    assert "location" not in response.headers
