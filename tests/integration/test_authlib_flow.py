"""The whole flow through the gateway with Authlib's OAuth 2.0 client, a real client library:
authorization URL with PKCE (S256) and state, sign-in and consent on the HTML forms, the
callback checked (state, RFC 9207 ``iss``), the code exchanged with a form body
(``client_secret_basic`` and ``client_secret_post``), a refresh with rotation, the access token
accepted over gRPC and by the bookings API, then revoked (RFC 7009) and refused by both within
a second."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.authlib_client import AsyncOAuth2Client, OAuthError, generate_token
from tests.integration.people import (
    FormBrowser,
    RegisteredApp,
    callback_params,
    new_person,
    register_app,
)
from tests.integration.resources import REVOKED, VALID, Resources
from tests.integration.stack import Stack

pytest_plugins = ["tests.integration.fixtures"]

SCOPE = "bookings:read customers:read"
CALLBACK = "http://127.0.0.1:8765/callback"


def oauth_client(app: RegisteredApp, method: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id=app.client_id, client_secret=app.client_secret or None,
                             token_endpoint_auth_method=method, redirect_uri=app.redirect_uri,
                             scope=SCOPE, code_challenge_method="S256", timeout=10.0)


@pytest.mark.parametrize(("auth_method", "revoke"), [
    ("client_secret_basic", "access_token"),
    ("client_secret_post", "refresh_token"),
], ids=["basic auth, revoke the access token", "post auth, revoke the refresh token"])
async def test_authlib_client_does_the_whole_flow(
        stack: Stack, pool: asyncpg.Pool, metadata: dict[str, Any], apis: Resources,
        auth_method: str, revoke: str) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri=CALLBACK)
    person = await new_person(pool)
    async with oauth_client(app, auth_method) as client, FormBrowser(stack.gateway) as browser:
        verifier = generate_token(64)
        url, state = client.create_authorization_url(metadata["authorization_endpoint"],
                                                     code_verifier=verifier)
        assert "code_challenge_method=S256" in url and f"state={state}" in url

        callback = await browser.authorize(url, person)
        assert callback.startswith(CALLBACK + "?")
        params = callback_params(callback)
        assert params["state"] == state
        # RFC 9207 §2.4: the client compares iss with the issuer it sent the request to.
        assert metadata["authorization_response_iss_parameter_supported"] is True
        assert params["iss"] == metadata["issuer"] == stack.issuer

        token = await client.fetch_token(metadata["token_endpoint"],
                                         authorization_response=callback, state=state,
                                         code_verifier=verifier)
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 3600
        assert token["scope"] == SCOPE
        assert token["access_token"].startswith("otesse_at_")
        assert token["refresh_token"].startswith("otesse_rt_")

        refreshed = await client.refresh_token(metadata["token_endpoint"],
                                               refresh_token=token["refresh_token"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed["scope"] == SCOPE
        # Inside the retry window the old refresh token gets back the same pair (a lost
        # response retried), minting nothing.
        retried = await client.refresh_token(metadata["token_endpoint"],
                                             refresh_token=token["refresh_token"])
        assert (retried["access_token"], retried["refresh_token"]) == (
            refreshed["access_token"], refreshed["refresh_token"])

        access = refreshed["access_token"]
        validation = await apis.validate(access, "bookings:read")
        assert (validation.active, validation.reason) == (True, VALID)
        assert validation.subject == person.user_id
        assert validation.client_id == app.client_id
        assert sorted(validation.scopes) == sorted(SCOPE.split())
        api = await apis.bookings(access)
        assert api.status_code == 200, api.text
        assert api.json()["user_id"] == person.user_id
        assert api.json()["client_id"] == app.client_id

        revoked = await client.revoke_token(metadata["revocation_endpoint"],
                                            token=refreshed[revoke], token_type_hint=revoke)
        assert revoked.status_code == 200
        assert await apis.seconds_until_refused(access, limit=1.0) < 1.0
        assert (await apis.validate(access)).reason == REVOKED
        async with httpx.AsyncClient() as http:
            introspected = await http.post(metadata["introspection_endpoint"],
                                           data={"token": access},
                                           auth=(app.client_id, app.client_secret))
        assert introspected.json() == {"active": False}
        if revoke == "refresh_token":
            # RFC 7009 §2.1: revoking a refresh token revokes its whole grant.
            with pytest.raises(OAuthError) as refused:
                await client.refresh_token(metadata["token_endpoint"],
                                           refresh_token=refreshed["refresh_token"])
            assert refused.value.error == "invalid_grant"
        else:
            # Revoking one access token leaves the grant: the app can refresh again.
            again = await client.refresh_token(metadata["token_endpoint"],
                                               refresh_token=refreshed["refresh_token"])
            assert (await apis.validate(again["access_token"])).active
