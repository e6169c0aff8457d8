"""Attacks on the flow, through the gateway against the real services: a public client must use
PKCE; a code works once, for its client, its redirect URI and its verifier only, and replaying
it revokes what it bought; a rotated refresh token presented after the retry window revokes the
grant; the callback carries the request's ``state`` and the issuer (RFC 9207), and a client
library refuses a callback whose state is not its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from tests.integration.authlib_client import (
    AsyncOAuth2Client,
    MismatchingStateException,
    OAuthError,
    generate_token,
)
from tests.integration.people import (
    FormBrowser,
    Person,
    RegisteredApp,
    callback_params,
    new_person,
    register_app,
)
from tests.integration.resources import REVOKED, Resources
from tests.integration.stack import RETRY_WINDOW, Stack

pytest_plugins = ["tests.integration.fixtures"]

CALLBACK = "http://127.0.0.1:8765/callback"
SCOPE = "bookings:read"


def oauth_client(app: RegisteredApp, method: str = "client_secret_post") -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id=app.client_id, client_secret=app.client_secret or None,
                             token_endpoint_auth_method=method, redirect_uri=app.redirect_uri,
                             scope=SCOPE, code_challenge_method="S256", timeout=10.0)


async def authorized(stack: Stack, person: Person, app: RegisteredApp,
                     verifier: str | None) -> dict[str, str]:
    """The callback's parameters after ``person`` approves ``app`` (PKCE when ``verifier``)."""
    async with oauth_client(app) as client, FormBrowser(stack.gateway) as browser:
        url, _ = client.create_authorization_url(stack.gateway + "/oauth/authorize",
                                                 code_verifier=verifier)
        return callback_params(await browser.authorize(url, person))


async def exchange(stack: Stack, app: RegisteredApp, code: str, *,
                   verifier: str | None = None, redirect_uri: str | None = None,
                   basic: bool = False) -> httpx.Response:
    """The code exchange with a form body; the client authenticates in the body
    (``client_secret_post``) or, with ``basic``, by HTTP Basic (``client_secret_basic``)."""
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri or app.redirect_uri}
    auth: httpx.Auth | None = None
    if basic:
        auth = httpx.BasicAuth(app.client_id, app.client_secret)
    else:
        form["client_id"] = app.client_id
        if app.client_secret:
            form["client_secret"] = app.client_secret
    if verifier is not None:
        form["code_verifier"] = verifier
    async with httpx.AsyncClient() as http:
        return await http.post(stack.gateway + "/oauth/token", data=form,
                               auth=auth or httpx.USE_CLIENT_DEFAULT)


async def test_a_public_client_with_pkce_needs_no_secret(
        stack: Stack, pool: asyncpg.Pool, metadata: dict[str, Any], apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE,
                             public=True)
    assert app.client_secret == ""
    person = await new_person(pool)
    async with oauth_client(app, "none") as client, FormBrowser(stack.gateway) as browser:
        verifier = generate_token(48)
        url, state = client.create_authorization_url(metadata["authorization_endpoint"],
                                                     code_verifier=verifier)
        callback = await browser.authorize(url, person)
        token = await client.fetch_token(metadata["token_endpoint"],
                                         authorization_response=callback, state=state,
                                         code_verifier=verifier)
        assert (await apis.validate(token["access_token"], SCOPE)).active
        refreshed = await client.refresh_token(metadata["token_endpoint"],
                                               refresh_token=token["refresh_token"])
        assert (await apis.bookings(refreshed["access_token"])).status_code == 200


async def test_a_public_client_without_pkce_is_sent_back_with_an_error(
        stack: Stack, pool: asyncpg.Pool) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE,
                             public=True)
    url = stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": SCOPE, "state": "no-pkce"})
    async with FormBrowser(stack.gateway) as browser:
        params = callback_params(await browser.authorize(url, await new_person(pool)))
    assert params["error"] == "invalid_request"
    assert (params["state"], params["iss"]) == ("no-pkce", stack.issuer)
    assert "code" not in params


@dataclass(frozen=True)
class Misuse:
    """A token request built from a real code that must be refused."""

    status: int
    error: str
    # (the app the code was issued to, another registered app, the code, the right verifier)
    # → keyword arguments of ``exchange``
    build: Callable[[RegisteredApp, RegisteredApp, str, str], dict[str, Any]]


MISUSES = {
    "fails because the redirect_uri differs from the authorization request's": Misuse(
        400, "invalid_grant", lambda app, other, code, verifier: dict(
            app=app, code=code, verifier=verifier, redirect_uri=CALLBACK + "/other")),
    "fails because the PKCE verifier is not the one behind the challenge": Misuse(
        400, "invalid_grant", lambda app, other, code, verifier: dict(
            app=app, code=code, verifier=generate_token(48))),
    "fails because the PKCE verifier is missing though a challenge was sent": Misuse(
        400, "invalid_grant", lambda app, other, code, verifier: dict(app=app, code=code)),
    "fails because the code was issued to another client": Misuse(
        400, "invalid_grant", lambda app, other, code, verifier: dict(
            app=other, code=code, verifier=verifier)),
    "fails because the code is made up": Misuse(
        400, "invalid_grant", lambda app, other, code, verifier: dict(
            app=app, code=generate_token(43), verifier=verifier)),
    "fails because the client secret is wrong": Misuse(
        401, "invalid_client", lambda app, other, code, verifier: dict(
            app=replace(app, client_secret=other.client_secret), code=code,
            verifier=verifier)),
    "fails because the client secret sent by HTTP Basic is wrong": Misuse(
        401, "invalid_client", lambda app, other, code, verifier: dict(
            app=replace(app, client_secret=other.client_secret), code=code,
            verifier=verifier, basic=True)),
}


@pytest.mark.parametrize("misuse", list(MISUSES.values()), ids=list(MISUSES))
async def test_a_code_is_exchanged_only_by_its_client_redirect_uri_and_verifier(
        stack: Stack, pool: asyncpg.Pool, misuse: Misuse) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    other = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    params = await authorized(stack, await new_person(pool), app, verifier)
    refused = await exchange(stack, **misuse.build(app, other, params["code"], verifier))
    assert refused.status_code == misuse.status, refused.text
    assert refused.json()["error"] == misuse.error
    assert "access_token" not in refused.json()
    assert "no-store" in refused.headers["cache-control"]
    if misuse.build(app, other, "", "").get("basic"):
        # RFC 6749 §5.2: with HTTP Basic, 401 and a WWW-Authenticate matching the scheme.
        assert refused.headers["www-authenticate"].startswith("Basic")


async def test_a_replayed_code_is_refused_and_revokes_what_the_first_exchange_issued(
        stack: Stack, pool: asyncpg.Pool, apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    code = (await authorized(stack, await new_person(pool), app, verifier))["code"]
    first = await exchange(stack, app, code, verifier=verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert (await apis.validate(tokens["access_token"])).active

    replayed = await exchange(stack, app, code, verifier=verifier)
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
    # RFC 6749 §4.1.2: the server "SHOULD revoke (when possible) all tokens previously issued
    # based on that authorization code".
    assert await apis.seconds_until_refused(tokens["access_token"]) < 1.0
    assert (await apis.validate(tokens["access_token"])).reason == REVOKED
    async with oauth_client(app) as client:
        with pytest.raises(OAuthError) as refused:
            await client.refresh_token(stack.gateway + "/oauth/token",
                                       refresh_token=tokens["refresh_token"])
    assert refused.value.error == "invalid_grant"


async def test_a_refresh_token_reused_after_the_retry_window_revokes_the_grant(
        stack: Stack, pool: asyncpg.Pool, apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    code = (await authorized(stack, await new_person(pool), app, verifier))["code"]
    tokens = (await exchange(stack, app, code, verifier=verifier)).json()
    token_endpoint = stack.gateway + "/oauth/token"
    async with oauth_client(app) as client:
        rotated = await client.refresh_token(token_endpoint,
                                             refresh_token=tokens["refresh_token"])
        await asyncio.sleep(RETRY_WINDOW + 0.2)
        # RFC 9700 §4.14.2: a rotated refresh token presented again means one of two parties
        # holds a stolen copy; the whole grant goes.
        with pytest.raises(OAuthError) as reused:
            await client.refresh_token(token_endpoint, refresh_token=tokens["refresh_token"])
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as successor:
            await client.refresh_token(token_endpoint, refresh_token=rotated["refresh_token"])
        assert successor.value.error == "invalid_grant"
    for access in (tokens["access_token"], rotated["access_token"]):
        assert await apis.seconds_until_refused(access) < 1.0


async def test_the_callback_carries_state_and_issuer_on_success_and_on_denial(
        stack: Stack, pool: asyncpg.Pool) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    person = await new_person(pool)
    state = "a state/with spaces & symbols=é"
    url = stack.gateway + "/oauth/authorize?" + urlencode({
        "client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
        "scope": SCOPE, "state": state, "prompt": "consent"})
    async with FormBrowser(stack.gateway) as browser:
        approved = callback_params(await browser.authorize(url, person))
        denied = callback_params(await browser.authorize(url, person, decision="deny"))
    assert (approved["state"], approved["iss"]) == (state, stack.issuer)
    assert approved["code"]
    assert (denied["state"], denied["iss"], denied["error"]) == (
        state, stack.issuer, "access_denied")
    assert "code" not in denied


FORGED_CALLBACKS = {
    "fails because the state belongs to another sign-in (CSRF)":
        lambda params: {**params, "state": generate_token(30)},
    "fails because the state is missing":
        lambda params: {k: v for k, v in params.items() if k != "state"},
}


@pytest.mark.parametrize("forge", list(FORGED_CALLBACKS.values()), ids=list(FORGED_CALLBACKS))
async def test_a_client_library_refuses_a_callback_whose_state_is_not_its_own(
        stack: Stack, pool: asyncpg.Pool, metadata: dict[str, Any],
        forge: Callable[[dict[str, str]], dict[str, str]]) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    async with oauth_client(app) as client, FormBrowser(stack.gateway) as browser:
        verifier = generate_token(48)
        url, state = client.create_authorization_url(metadata["authorization_endpoint"],
                                                     code_verifier=verifier)
        params = callback_params(await browser.authorize(url, await new_person(pool)))
        assert params["iss"] == metadata["issuer"]
        forged = f"{CALLBACK}?{urlencode(forge(params))}"
        with pytest.raises(MismatchingStateException):
            await client.fetch_token(metadata["token_endpoint"],
                                     authorization_response=forged, state=state,
                                     code_verifier=verifier)


async def test_another_client_cannot_revoke_a_token_it_was_not_issued(
        stack: Stack, pool: asyncpg.Pool, apis: Resources) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    other = await register_app(stack.registry_grpc, redirect_uri=CALLBACK, scopes=SCOPE)
    verifier = generate_token(48)
    code = (await authorized(stack, await new_person(pool), app, verifier))["code"]
    tokens = (await exchange(stack, app, code, verifier=verifier)).json()
    async with httpx.AsyncClient() as http:
        for token in (tokens["access_token"], tokens["refresh_token"]):
            refused = await http.post(stack.gateway + "/oauth/revoke", data={"token": token},
                                      auth=(other.client_id, other.client_secret))
            # RFC 7009 §2.1: the server verifies the token was issued to the client revoking it.
            assert (refused.status_code, refused.json()["error"]) == (
                400, "unauthorized_client")
    assert (await apis.validate(tokens["access_token"])).active
    assert (await apis.bookings(tokens["access_token"])).status_code == 200
