"""The public documentation to the letter (``OAuth 2.0 Flow``): the step 2 authorization URL
with exactly its parameters, the step 4 exchange and the Token Refresh sent as the very JSON
bodies it shows, each answer exactly the documented shape, and step 5's API call with the
token."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx

from tests.integration.people import FormBrowser, callback_params, new_person, register_app
from tests.integration.resources import Resources
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read customers:read"
DOCUMENTED_KEYS = {"access_token", "refresh_token", "token_type", "expires_in", "scope"}


def assert_documented_response(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "no-store" in response.headers["cache-control"]
    body: dict[str, Any] = json.loads(response.content)
    assert set(body) == DOCUMENTED_KEYS
    assert body["access_token"].startswith("otesse_at_")
    assert body["refresh_token"].startswith("otesse_rt_")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600 and type(body["expires_in"]) is int
    assert body["scope"] == SCOPE
    return body


async def test_the_documented_requests_get_the_documented_answers(
        stack: Stack, pool: asyncpg.Pool, apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK)
    person = await new_person(pool)
    # Step 2, with exactly the documented parameters (no PKCE: it is optional for a
    # confidential client).
    url = f"{stack.gateway}/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": SCOPE, "state": "random_csrf_token"})
    async with FormBrowser(stack.gateway) as browser:
        callback = await browser.authorize(url, person)
    # Step 4: "redirected to your redirect_uri with an authorization code".
    assert callback.startswith(CALLBACK + "?code=")
    params = callback_params(callback)
    assert params["state"] == "random_csrf_token"

    async with httpx.AsyncClient(base_url=stack.gateway) as http:
        exchanged = await http.post("/oauth/token", headers={
            "Content-Type": "application/json"}, content=json.dumps({
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": CALLBACK,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
            }, indent=0))
        tokens = assert_documented_response(exchanged)

        # Step 5: the access token in the Authorization header.
        api = await apis.bookings(tokens["access_token"])
        assert api.status_code == 200
        assert api.json()["data"], "the example API lists bookings"

        # Token Refresh, the documented body.
        refreshed = await http.post("/oauth/token", headers={
            "Content-Type": "application/json"}, content=json.dumps({
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": app.client_id,
                "client_secret": app.client_secret,
            }, indent=0))
        fresh = assert_documented_response(refreshed)
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert (await apis.bookings(fresh["access_token"])).status_code == 200
