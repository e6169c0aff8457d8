"""The audit trail of a whole flow through the gateway, with every service a real process: a
failed and a successful sign-in, consent, the code exchange, refreshes, a reused refresh token,
a replayed code, a revocation by the app, and an operator rotating the app's secret with the
CLI. Each event names the client's address as the gateway resolved it and the request id it
gave the request; then every column of every row written is searched for each password,
secret, token, code, verifier and cookie the flow used: none is there. Every service that
writes events counts them in its ``/metrics``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import subprocess
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx

from tests.audit_rows import events, last_event_id, rows_holding
from tests.integration.authlib_client import generate_token
from tests.integration.people import (
    FormBrowser,
    callback_params,
    hidden_inputs,
    new_person,
    register_app,
)
from tests.integration.stack import OTESSE_AUTH, Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read"
# Where the browser and the app are, as the load balancer in front of the gateway says
# (loopback is a trusted proxy of the test stack's gateway).
BROWSER_IP = "203.0.113.21"
APP_IP = "198.51.100.34"


def rid() -> str:
    return "trail-" + secrets.token_hex(8)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def test_a_whole_flow_is_in_the_trail_and_no_secret_is(
        stack: Stack, pool: asyncpg.Pool) -> None:
    after = await last_event_id(pool)
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    person = await new_person(pool)
    wrong_password = "not the password " + secrets.token_hex(4)
    sign_in_failed, browser_rid = rid(), rid()

    async with FormBrowser(stack.gateway) as browser:
        browser.http.headers.update({"X-Forwarded-For": BROWSER_IP})
        form = await browser.http.get("/login")
        refused = await browser.http.post("/login", headers={"X-Request-ID": sign_in_failed},
                                          data={**hidden_inputs(form.text),
                                                "email": person.email,
                                                "password": wrong_password})
        assert refused.status_code == 400
        browser.http.headers.update({"X-Request-ID": browser_rid})
        verifier = generate_token(48)
        url = stack.gateway + "/oauth/authorize?" + urlencode({
            "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
            "scope": SCOPE, "state": "trail", "code_challenge": s256(verifier),
            "code_challenge_method": "S256"})
        code = callback_params(await browser.authorize(url, person))["code"]
        cookies = [cookie.value for cookie in browser.http.cookies.jar]
        pages = list(browser.pages)

    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0,
                                 headers={"X-Forwarded-For": APP_IP}) as http:
        auth = (app.client_id, app.client_secret)

        async def token(request_id: str, **form: str) -> httpx.Response:
            return await http.post("/oauth/token", auth=auth, data=form,
                                   headers={"X-Request-ID": request_id})

        exchanged, refreshed, rotated_again, reused, replayed, revoked = (rid() for _ in range(6))
        first = (await token(exchanged, grant_type="authorization_code", code=code,
                             redirect_uri=CALLBACK, code_verifier=verifier)).json()
        second = (await token(refreshed, grant_type="refresh_token",
                              refresh_token=first["refresh_token"])).json()
        third = (await token(rotated_again, grant_type="refresh_token",
                             refresh_token=second["refresh_token"])).json()
        assert (await token(reused, grant_type="refresh_token",
                            refresh_token=first["refresh_token"])).status_code == 400
        assert (await token(replayed, grant_type="authorization_code", code=code,
                            redirect_uri=CALLBACK, code_verifier=verifier)).status_code == 400
        # A second grant, ended by the app itself (RFC 7009).
        other_person = await new_person(pool)
        async with FormBrowser(stack.gateway) as other_browser:
            other_code = callback_params(await other_browser.authorize(
                stack.gateway + "/oauth/authorize?" + urlencode({
                    "client_id": app.client_id, "redirect_uri": CALLBACK,
                    "response_type": "code", "scope": SCOPE, "state": "x"}),
                other_person))["code"]
        fourth = (await token(rid(), grant_type="authorization_code", code=other_code,
                              redirect_uri=CALLBACK)).json()
        assert (await http.post("/oauth/revoke", auth=auth, data={
            "token": fourth["refresh_token"]}, headers={"X-Request-ID": revoked})
        ).status_code == 200

    rotation = await asyncio.to_thread(subprocess.run, [
        str(OTESSE_AUTH), "clients", "rotate-secret", app.client_id, "--json"],
        env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=60,
        check=False)
    assert rotation.returncode == 0, rotation.stderr
    new_secret = json.loads(rotation.stdout)["client_secret"]

    async def recorded(request_id: str) -> list[tuple[Any, ...]]:
        rows = await events(pool, where="request_id = $1", args=[request_id])
        return sorted((row["event_type"], row["actor_kind"], row["client_ip"])
                      for row in rows)

    assert await recorded(sign_in_failed) == [("sign_in.failed", "anonymous", BROWSER_IP)]
    assert await recorded(browser_rid) == [("consent.granted", "user", BROWSER_IP),
                                           ("sign_in.succeeded", "user", BROWSER_IP)]
    assert await recorded(exchanged) == [("token.issued", "client", APP_IP)]
    assert await recorded(refreshed) == [("token.issued", "client", APP_IP)]
    assert await recorded(rotated_again) == [("token.issued", "client", APP_IP)]
    assert await recorded(reused) == [("grant.revoked", "system", APP_IP),
                                      ("refresh_token.reused", "client", APP_IP)]
    # The grant was revoked already: the replay is recorded, and revokes nothing more.
    assert await recorded(replayed) == [("code.replayed", "client", APP_IP)]
    assert await recorded(revoked) == [("grant.revoked", "client", APP_IP)]
    (operator,) = await events(pool, where="event_id > $1 AND client_id = $2"
                               " AND event_type = 'client.secret_rotated'",
                               args=[after, app.client_id])
    assert (operator["actor_kind"], operator["client_ip"]) == ("operator", "127.0.0.1")

    needles = {
        "the password": person.password, "the wrong password": wrong_password,
        "the client secret": app.client_secret, "the rotated client secret": new_secret,
        "the code": code, "the other code": other_code, "the PKCE verifier": verifier,
        **{f"cookie {n}": value for n, value in enumerate(cookies)},
    }
    for n, body in enumerate((first, second, third, fourth)):
        needles[f"access token {n}"] = body["access_token"]
        needles[f"access token {n}'s signature"] = body["access_token"].rsplit(".", 1)[1]
        needles[f"refresh token {n}"] = body["refresh_token"]
        needles[f"refresh token {n} without its prefix"] = body["refresh_token"].removeprefix(
            "otesse_rt_")
    for page in pages:
        for name, value in hidden_inputs(page).items():
            if name in ("csrf_token", "request_id"):
                needles[f"form field {name}"] = value
    assert all(needles.values()) and cookies
    leaks = await rows_holding(pool, list(needles.values()), after=after)
    assert leaks == [], [(what, row["event_type"]) for what, value in needles.items()
                         for needle, row in leaks if needle == value]
    for prefix in ("otesse_at_", "otesse_rt_", "otesse_cs_"):
        assert await rows_holding(pool, [prefix], after=after) == []


async def test_each_service_counts_what_it_writes(stack: Stack, pool: asyncpg.Pool) -> None:
    ports = {"authorize": "OTESSE_AUTHORIZE_PORT", "token": "OTESSE_TOKEN_HTTP_PORT",
             "registry": "OTESSE_REGISTRY_HTTP_PORT"}
    counted = {"authorize": "sign_in.succeeded", "token": "token.issued",
               "registry": "client.registered"}

    async def counts() -> dict[str, float]:
        found = dict.fromkeys(ports, 0.0)
        async with httpx.AsyncClient(timeout=10.0) as http:
            for service, variable in ports.items():
                text = (await http.get(f"http://127.0.0.1:{stack.env[variable]}/metrics")).text
                for line in text.splitlines():
                    if line.startswith(f'otesse_audit_events_total{{type="{counted[service]}"}}'):
                        found[service] = float(line.split()[-1])
        return found

    before = await counts()
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    async with FormBrowser(stack.gateway) as browser:
        code = callback_params(await browser.authorize(
            stack.gateway + "/oauth/authorize?" + urlencode({
                "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
                "scope": SCOPE, "state": "m"}), await new_person(pool)))["code"]
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10.0) as http:
        assert (await http.post("/oauth/token", auth=(app.client_id, app.client_secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
        ).status_code == 200
    after = await counts()
    assert {service: after[service] - before[service] for service in ports} == dict.fromkeys(
        ports, 1.0)
