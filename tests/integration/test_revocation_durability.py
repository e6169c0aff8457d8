"""Revocation survives the loss of Redis (DESIGN §3: "Losing Redis … must not bring a revoked
token back to life"): the deny-list is wiped as a Redis restart without persistence would, and
both the gRPC validation and the bookings API still refuse the revoked token, while a live
token of another grant keeps working."""

from __future__ import annotations

from urllib.parse import urlencode

import asyncpg
import httpx
import redis.asyncio as aioredis

from tests.integration.people import FormBrowser, callback_params, new_person, register_app
from tests.integration.resources import REVOKED, VALID, Resources
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"


async def issue_tokens(stack: Stack, pool: asyncpg.Pool) -> tuple[dict[str, str], tuple[str, str]]:
    """A fresh grant's tokens, and the app's credentials."""
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK)
    url = stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": "bookings:read", "state": "durable"})
    async with FormBrowser(stack.gateway) as browser:
        code = callback_params(await browser.authorize(url, await new_person(pool)))["code"]
    auth = (app.client_id, app.client_secret)
    async with httpx.AsyncClient() as http:
        response = await http.post(stack.gateway + "/oauth/token", auth=auth, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
    assert response.status_code == 200
    return response.json(), auth


async def test_a_revoked_token_stays_refused_after_the_deny_list_is_lost(
        stack: Stack, pool: asyncpg.Pool, apis: Resources, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    revoked, auth = await issue_tokens(stack, pool)
    live, _ = await issue_tokens(stack, pool)
    async with httpx.AsyncClient() as http:
        response = await http.post(stack.gateway + "/oauth/revoke", auth=auth,
                                   data={"token": revoked["refresh_token"]})
    assert response.status_code == 200
    assert await apis.seconds_until_refused(revoked["access_token"]) < 1.0

    deny_keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}token:deny:*")]
    assert deny_keys, "the revocation reached the Redis deny-list"
    await redis.delete(*deny_keys)

    assert (await apis.validate(revoked["access_token"])).reason == REVOKED
    assert (await apis.bookings(revoked["access_token"])).status_code == 401
    assert (await apis.validate(live["access_token"], "bookings:read")).reason == VALID
    assert (await apis.bookings(live["access_token"])).status_code == 200
