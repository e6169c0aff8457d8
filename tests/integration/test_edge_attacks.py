"""The public edge under the cheap attacks, through the gateway in front of the real services:
junk sent in a victim client's name from many addresses, an address that keeps failing client
authentication, slow bodies held against both upstream pools, and a ``Connection`` header that
would strip ``Host``. The gateway believes ``X-Forwarded-For`` from loopback (a trusted proxy),
so one test process plays clients at many addresses."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.integration.authlib_client import generate_token
from tests.integration.people import RegisteredApp, new_person, register_app
from tests.integration.stack import AUTH_FAILURE_RATE, CLIENT_RATE, Stack
from tests.integration.test_attacks import CALLBACK, SCOPE, authorized, exchange

pytest_plugins = ["tests.integration.fixtures"]


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# Junk naming the victim, in every way a token request can name a client.
JUNK: dict[str, Callable[[RegisteredApp], dict[str, Any]]] = {
    "json, wrong secret, junk code": lambda victim: {"json": {
        "grant_type": "authorization_code", "code": generate_token(43),
        "redirect_uri": CALLBACK, "client_id": victim.client_id,
        "client_secret": "otesse_cs_" + generate_token(43)}},
    "form, wrong secret, junk refresh token": lambda victim: {"data": {
        "grant_type": "refresh_token", "refresh_token": "otesse_rt_" + generate_token(43),
        "client_id": victim.client_id, "client_secret": "otesse_cs_" + generate_token(43)}},
    "basic, wrong secret, junk code": lambda victim: {
        "data": {"grant_type": "authorization_code", "code": generate_token(43),
                 "redirect_uri": CALLBACK},
        "headers": {"Authorization": basic(victim.client_id, "otesse_cs_guess")}},
    "form, no secret at all": lambda victim: {"data": {
        "grant_type": "authorization_code", "code": generate_token(43),
        "redirect_uri": CALLBACK, "client_id": victim.client_id}},
}


async def test_junk_in_a_victims_name_from_many_addresses_costs_the_victim_nothing(
        stack: Stack, pool: asyncpg.Pool) -> None:
    victim = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    code = (await authorized(stack, await new_person(pool), victim, verifier))["code"]
    # Twice the victim's whole budget in junk, from addresses that each stay under their own
    # limit on failed client authentications.
    addresses = [f"198.51.100.{i}" for i in range(1, 11)]
    per_address = 2 * CLIENT_RATE // len(addresses)
    assert per_address < AUTH_FAILURE_RATE
    junk: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
        for address in addresses:
            for i in range(per_address):
                build = list(JUNK.values())[i % len(JUNK)]
                request = build(victim)
                request["headers"] = {**request.get("headers", {}), "X-Forwarded-For": address}
                junk.append(await http.post("/oauth/token", **request))
    # The victim's own exchange and the refreshes after it all succeed.
    first = await exchange(stack, victim, code, verifier=verifier)
    own = [first]
    tokens = first.json() if first.status_code == 200 else {}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
        for _ in range(5):
            if "refresh_token" not in tokens:
                break
            refreshed = await http.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": victim.client_id, "client_secret": victim.client_secret})
            own.append(refreshed)
            tokens = refreshed.json()
    assert [r.status_code for r in own] == [200] * 6, [r.text for r in own]
    assert {(r.status_code, r.json()["error"]) for r in junk} == {(401, "invalid_client")}
    assert all("x-otesse-client-auth" not in r.headers for r in junk)


async def test_an_address_that_keeps_failing_client_authentication_is_refused(
        stack: Stack) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    guess = {"grant_type": "refresh_token", "refresh_token": "otesse_rt_x",
             "client_id": app.client_id, "client_secret": "otesse_cs_guess"}
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
        # The bucket refills slowly (AUTH_FAILURE_RATE a minute): a busy machine may let one or
        # two more through, but the limit must bite soon after AUTH_FAILURE_RATE.
        while len(answers) < AUTH_FAILURE_RATE + 5 and (
                not answers or answers[-1].status_code != 429):
            answers.append(await http.post("/oauth/token", data=guess, headers=attacker))
        introspect = await http.post("/oauth/introspect", headers=attacker, data={
            "token": "x", "client_id": app.client_id, "client_secret": app.client_secret})
        # Another address guessing the same client is not refused for the first one's sins,
        # and the client itself (its right secret) is not refused at all.
        elsewhere = await http.post("/oauth/token", data=guess,
                                    headers={"X-Forwarded-For": "203.0.113.67"})
        owner = await http.post("/oauth/token", data={**guess,
                                                      "client_secret": app.client_secret})
    limited = answers[-1]
    assert (limited.status_code, limited.json()["error"]) == (429, "too_many_requests")
    assert len(answers) > AUTH_FAILURE_RATE
    assert {(a.status_code, a.json()["error"]) for a in answers[:-1]} == {
        (401, "invalid_client")}
    assert int(limited.headers["retry-after"]) >= 1
    assert (introspect.status_code, introspect.json()["error"]) == (429, "too_many_requests")
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (401, "invalid_client")
    assert (owner.status_code, owner.json()["error"]) == (400, "invalid_grant")


async def test_slow_bodies_on_both_pools_leave_tokens_jwks_and_sign_in_served(
        stack: Stack, pool: asyncpg.Pool) -> None:
    """More half-sent bodies than each upstream pool holds (100 connections by default), to
    the token service (/oauth/introspect) and the authorize service (/logout), from addresses
    that each stay under the per-address cap: another client's refresh, JWKS and sign-in page
    are all answered 200 meanwhile."""
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    code = (await authorized(stack, await new_person(pool), app, verifier))["code"]
    tokens = (await exchange(stack, app, code, verifier=verifier)).json()
    gateway = urlsplit(stack.gateway)
    writers: list[asyncio.StreamWriter] = []
    try:
        for i in range(210):
            path = "/oauth/introspect" if i % 2 else "/logout"
            _, writer = await asyncio.open_connection(gateway.hostname, gateway.port)
            writers.append(writer)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                         f"X-Forwarded-For: 192.0.2.{i // 10 + 1}\r\n"
                         "Content-Type: application/x-www-form-urlencoded\r\n"
                         "Content-Length: 1000\r\n\r\ntoken=".encode())
        await asyncio.gather(*(writer.drain() for writer in writers))
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
            refreshed = await http.post("/oauth/token", data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                "client_id": app.client_id, "client_secret": app.client_secret})
            jwks = await http.get("/.well-known/jwks.json")
            sign_in = await http.get("/login")
    finally:
        for writer in writers:
            writer.transport.abort()
    assert refreshed.status_code == 200, refreshed.text
    assert jwks.status_code == 200
    assert sign_in.status_code == 200 and 'name="password"' in sign_in.text


REDIRECTING = {
    "fails because Connection would strip Host (trailing slash)": (
        "/settings/authorized-apps/", {"Connection": "host"}, 400),
    "fails because Connection would strip Host (sign-in page)": (
        "/login", {"Connection": "keep-alive, Host"}, 400),
    "fails because Connection would strip Content-Length": (
        "/login", {"Connection": "content-length"}, 400),
    "a trailing slash is not redirected to an absolute address": (
        "/settings/authorized-apps/", {}, 404),
}


@pytest.mark.parametrize(("path", "headers", "status"), list(REDIRECTING.values()),
                         ids=list(REDIRECTING))
async def test_no_answer_reveals_an_internal_address(stack: Stack, path: str,
                                                     headers: dict[str, str],
                                                     status: int) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
        response = await http.get(path, headers=headers)
    internal = {f"127.0.0.1:{stack.env[name]}" for name in (
        "OTESSE_AUTHORIZE_PORT", "OTESSE_TOKEN_HTTP_PORT")}
    assert response.status_code == status
    assert not any(address in response.headers.get("location", "") + response.text
                   for address in internal)
    with contextlib.suppress(KeyError):
        assert not response.headers["location"].startswith("http")
