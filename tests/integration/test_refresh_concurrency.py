"""Refresh rotation is safe for real clients (DESIGN §2.3): the same refresh token sent by several
requests at once, through the gateway (two tabs, a retry after a timeout), gets one and the
same new pair every time, and the grant stays alive."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import asyncpg
import httpx

from tests.integration.people import FormBrowser, callback_params, new_person, register_app
from tests.integration.resources import Resources
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"
CONCURRENT = 6


async def test_concurrent_refreshes_of_one_token_get_one_pair_and_revoke_nothing(
        stack: Stack, pool: asyncpg.Pool, apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK)
    url = stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "bookings:read", "state": "tabs"})
    async with FormBrowser(stack.gateway) as browser:
        code = callback_params(await browser.authorize(url, await new_person(pool)))["code"]
    auth = (app.client_id, app.client_secret)
    async with httpx.AsyncClient(base_url=stack.gateway) as http:
        tokens = (await http.post("/oauth/token", auth=auth, data={
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": CALLBACK})).json()
        answers = await asyncio.gather(*(
            http.post("/oauth/token", auth=auth, data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
            for _ in range(CONCURRENT)))
        assert [a.status_code for a in answers] == [200] * CONCURRENT, [a.text for a in answers]
        pairs = {(a.json()["access_token"], a.json()["refresh_token"]) for a in answers}
        assert len(pairs) == 1
        (access, refresh), = pairs
        assert (await apis.validate(access)).active
        # The successor works: nothing was taken for theft.
        following = await http.post("/oauth/token", auth=auth, data={
            "grant_type": "refresh_token", "refresh_token": refresh})
    assert following.status_code == 200
    assert (await apis.bookings(following.json()["access_token"])).status_code == 200
