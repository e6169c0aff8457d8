"""No service logs a token, secret, password or code: after a whole flow through the gateway
(sign-in, exchange, refresh, API call, revocation), none of those values, nor the signed part
of an access token without its prefix, appears in any service's log."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import asyncpg
import httpx

from tests.integration.people import FormBrowser, callback_params, new_person, register_app
from tests.integration.resources import Resources
from tests.integration.stack import SERVICES, Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"


async def test_no_log_line_carries_a_credential(stack: Stack, pool: asyncpg.Pool,
                                                apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK)
    person = await new_person(pool)
    url = stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "bookings:read", "state": "logs"})
    async with FormBrowser(stack.gateway) as browser:
        code = callback_params(await browser.authorize(url, person))["code"]
    session_ids = [cookie.value for cookie in browser.http.cookies.jar]
    async with httpx.AsyncClient(base_url=stack.gateway) as http:
        auth = (app.client_id, app.client_secret)
        tokens = (await http.post("/oauth/token", auth=auth, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})).json()
        fresh = (await http.post("/oauth/token", auth=auth, data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})).json()
        assert (await apis.bookings(fresh["access_token"])).status_code == 200
        assert (await http.post("/oauth/revoke", auth=auth,
                                data={"token": fresh["refresh_token"]})).status_code == 200
    await apis.seconds_until_refused(fresh["access_token"])
    await asyncio.sleep(0.2)  # the last access-log lines reach the files

    secrets = {
        "the password": person.password,
        "the client secret": app.client_secret,
        "the code": code,
        "a refresh token": tokens["refresh_token"],
        "the rotated refresh token": fresh["refresh_token"],
        "an access token's signed part": tokens["access_token"].removeprefix("otesse_at_"),
        "the refreshed access token's signature": fresh["access_token"].rsplit(".", 1)[1],
        **{f"session id {n}": value for n, value in enumerate(session_ids)},
    }
    assert session_ids
    logs = {service: stack.log_text(service) for service in SERVICES}
    assert all(logs.values()), "every service wrote log lines"
    leaks = [(what, service) for what, value in secrets.items()
             for service, text in logs.items() if value in text]
    assert not leaks
