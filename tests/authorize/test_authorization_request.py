"""``GET /oauth/authorize`` parameter checks: what is a 400 page, what is an error redirect."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.authorize.conftest import (
    ISSUER,
    LOOPBACK_REDIRECT,
    REDIRECT_URI,
    App,
    authorize_params,
    query,
)

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

Pairs = list[tuple[str, str | int | float | bool | None]]


def build(app: App, *, drop: tuple[str, ...] = (), extra: Pairs | None = None,
          **values: str) -> httpx.QueryParams:
    base = authorize_params(app)
    base.update(values)
    return httpx.QueryParams([(k, v) for k, v in base.items() if k not in drop] + (extra or []))


# Each case: (id, how to change a valid request) → a 400 HTML page, never a redirect.
PAGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("missing client_id", {"drop": ("client_id",)}),
    ("empty client_id counts as missing", {"client_id": ""}),
    ("unknown client_id", {"client_id": "otesse_ci_doesnotexist"}),
    ("oversized client_id", {"client_id": "otesse_ci_" + "a" * 3000}),
    ("repeated client_id", {"extra": [("client_id", "otesse_ci_other")]}),
    ("missing redirect_uri", {"drop": ("redirect_uri",)}),
    ("repeated redirect_uri", {"extra": [("redirect_uri", REDIRECT_URI)]}),
    ("unregistered redirect_uri", {"redirect_uri": "https://evil.example/callback"}),
    ("oversized redirect_uri", {"redirect_uri": REDIRECT_URI + "?" + "a" * 3000}),
]

# Redirect URIs that look like the registered https://app.example.com/callback but are not it.
LOOK_ALIKES = [
    ("other port", "https://app.example.com:8443/callback"),
    ("default port spelled out", "https://app.example.com:443/callback"),
    ("other path", "https://app.example.com/callback/evil"),
    ("path prefix", "https://app.example.com/callbac"),
    ("host case", "https://APP.example.com/callback"),
    ("path case", "https://app.example.com/Callback"),
    ("scheme case", "HTTPS://app.example.com/callback"),
    ("trailing slash", "https://app.example.com/callback/"),
    ("trailing dot host", "https://app.example.com./callback"),
    ("userinfo before host", "https://app.example.com@evil.example/callback"),
    ("userinfo on the real host", "https://evil@app.example.com/callback"),
    ("encoded path char", "https://app.example.com/%63allback"),
    ("encoded slash and at", "https://app.example.com%2F@evil.example/callback"),
    ("encoded dot segment", "https://app.example.com/callback/%2E%2E/evil"),
    ("fragment", "https://app.example.com/callback#frag"),
    ("added query", "https://app.example.com/callback?next=https://evil.example"),
    ("http instead of https", "http://app.example.com/callback"),
    ("suffix domain", "https://app.example.com.evil.example/callback"),
    ("subdomain", "https://evil.app.example.com/callback"),
    ("leading space", " https://app.example.com/callback"),
    ("backslash", "https://app.example.com\\@evil.example/callback"),
    ("loopback other port", "http://127.0.0.1:8766/cb?source=otesse"),
    ("loopback without its query", "http://127.0.0.1:8765/cb"),
    ("localhost for 127.0.0.1", "http://localhost:8765/cb?source=otesse"),
]


def _assert_page(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "This link can" in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("change", [case for _, case in PAGE_CASES],
                         ids=[name for name, _ in PAGE_CASES])
async def test_untrusted_client_or_redirect_is_a_page_never_a_redirect(
        browser: httpx.AsyncClient, app: App, change: dict[str, Any]) -> None:
    response = await browser.get("/oauth/authorize", params=build(app, **change))
    _assert_page(response)


@pytest.mark.parametrize("redirect_uri", [uri for _, uri in LOOK_ALIKES],
                         ids=[name for name, _ in LOOK_ALIKES])
async def test_look_alike_redirect_uris_are_refused_with_a_page(
        browser: httpx.AsyncClient, app: App, redirect_uri: str) -> None:
    response = await browser.get("/oauth/authorize",
                                 params=build(app, redirect_uri=redirect_uri))
    _assert_page(response)


# Each case: (id, change, error). The redirect goes back to the registered URI with the error.
REDIRECT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing response_type", {"drop": ("response_type",)}, "invalid_request"),
    ("response_type token", {"response_type": "token"}, "unsupported_response_type"),
    ("response_type hybrid", {"response_type": "code id_token"}, "unsupported_response_type"),
    ("missing scope", {"drop": ("scope",)}, "invalid_scope"),
    ("empty scope counts as missing", {"scope": ""}, "invalid_scope"),
    ("only spaces in scope", {"scope": "   "}, "invalid_scope"),
    ("unknown scope", {"scope": "bookings:read admin:everything"}, "invalid_scope"),
    ("scope not allowed for this client", {"scope": "customers:write"}, "invalid_scope"),
    ("malformed scope", {"scope": 'bookings:read "quoted"'}, "invalid_scope"),
    ("plain PKCE refused", {"code_challenge": CHALLENGE, "code_challenge_method": "plain"},
     "invalid_request"),
    ("challenge without method means plain", {"code_challenge": CHALLENGE},
     "invalid_request"),
    ("method without challenge", {"code_challenge_method": "S256"}, "invalid_request"),
    ("challenge too short", {"code_challenge": CHALLENGE[:42], "code_challenge_method": "S256"},
     "invalid_request"),
    ("challenge too long", {"code_challenge": "a" * 129, "code_challenge_method": "S256"},
     "invalid_request"),
    ("challenge not base64url", {"code_challenge": CHALLENGE[:-1] + "+",
                                 "code_challenge_method": "S256"}, "invalid_request"),
    ("method in lower case", {"code_challenge": CHALLENGE, "code_challenge_method": "s256"},
     "invalid_request"),
    ("unknown prompt", {"prompt": "select_account"}, "invalid_request"),
    ("prompt none with login", {"prompt": "none login"}, "invalid_request"),
    ("prompt none with consent", {"prompt": "consent none"}, "invalid_request"),
    ("repeated scope", {"extra": [("scope", "bookings:write")]}, "invalid_request"),
    ("repeated response_type", {"extra": [("response_type", "code")]}, "invalid_request"),
    ("repeated prompt", {"extra": [("prompt", "consent")], "prompt": "login"},
     "invalid_request"),
    ("oversized scope", {"scope": "bookings:read " + "x" * 2100}, "invalid_request"),
    ("oversized code_challenge", {"code_challenge": "a" * 2100,
                                  "code_challenge_method": "S256"}, "invalid_request"),
]


def _assert_error_redirect(response: httpx.Response, *, redirect_uri: str, error: str,
                           state: str | None) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri.split("?")[0] + "?")
    params = query(location)
    assert params["error"] == [error]
    assert params["error_description"][0]
    assert params["iss"] == [ISSUER]
    if state is None:
        assert "state" not in params
    else:
        assert params["state"] == [state]
    assert "code" not in params
    assert response.headers["cache-control"] == "no-store"
    return params


@pytest.mark.parametrize(("change", "error"), [(c, e) for _, c, e in REDIRECT_CASES],
                         ids=[name for name, _, _ in REDIRECT_CASES])
async def test_errors_after_the_redirect_is_trusted_go_back_to_the_client(
        browser: httpx.AsyncClient, app: App, change: dict[str, Any], error: str) -> None:
    response = await browser.get("/oauth/authorize", params=build(app, **change))
    _assert_error_redirect(response, redirect_uri=REDIRECT_URI, error=error, state="xyz-state")


STATE_CASES = [
    ("repeated state", {"extra": [("state", "other")]}),
    ("state longer than 1 KiB", {"state": "s" * 1025}),
    ("state longer than 2 KiB", {"state": "s" * 2049}),
]


@pytest.mark.parametrize("change", [c for _, c in STATE_CASES],
                         ids=[name for name, _ in STATE_CASES])
async def test_a_state_that_cannot_be_trusted_is_not_echoed(
        browser: httpx.AsyncClient, app: App, change: dict[str, Any]) -> None:
    response = await browser.get("/oauth/authorize", params=build(app, **change))
    _assert_error_redirect(response, redirect_uri=REDIRECT_URI, error="invalid_request",
                           state=None)


async def test_a_state_of_exactly_1_kib_is_accepted(browser: httpx.AsyncClient,
                                                    app: App) -> None:
    response = await browser.get("/oauth/authorize", params=build(app, state="s" * 1024))
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")


async def test_an_error_redirect_keeps_the_query_of_the_registered_uri(
        browser: httpx.AsyncClient, app: App) -> None:
    response = await browser.get("/oauth/authorize", params=build(
        app, redirect_uri=LOOPBACK_REDIRECT, response_type="token"))
    params = _assert_error_redirect(response, redirect_uri=LOOPBACK_REDIRECT,
                                    error="unsupported_response_type", state="xyz-state")
    assert params["source"] == ["otesse"]
    assert urlsplit(response.headers["location"]).netloc == "127.0.0.1:8765"


async def test_without_state_the_error_carries_no_state(browser: httpx.AsyncClient,
                                                        app: App) -> None:
    response = await browser.get("/oauth/authorize",
                                 params=build(app, drop=("state",), response_type="token"))
    _assert_error_redirect(response, redirect_uri=REDIRECT_URI,
                           error="unsupported_response_type", state=None)


async def test_public_clients_must_send_a_pkce_challenge(browser: httpx.AsyncClient,
                                                         public_app: App) -> None:
    params = authorize_params(public_app, scope="bookings:read")
    response = await browser.get("/oauth/authorize", params=params)
    _assert_error_redirect(response, redirect_uri=REDIRECT_URI, error="invalid_request",
                           state="xyz-state")
    with_pkce = await browser.get("/oauth/authorize", params={
        **params, "code_challenge": CHALLENGE, "code_challenge_method": "S256"})
    assert with_pkce.status_code == 302
    assert with_pkce.headers["location"].startswith("/login?next=")


async def test_unknown_parameters_are_ignored(browser: httpx.AsyncClient, app: App) -> None:
    # RFC 6749 §3.1: "The authorization server MUST ignore unrecognized request parameters."
    response = await browser.get("/oauth/authorize",
                                 params=build(app, extra=[("foo", "1"), ("foo", "2")]))
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")


async def test_error_description_never_reflects_request_input(browser: httpx.AsyncClient,
                                                              app: App) -> None:
    response = await browser.get("/oauth/authorize",
                                 params=build(app, scope="<script>alert(1)</script>"))
    params = _assert_error_redirect(response, redirect_uri=REDIRECT_URI, error="invalid_scope",
                                    state="xyz-state")
    assert "script" not in params["error_description"][0]
