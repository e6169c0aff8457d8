"""NUL bytes, odd Unicode and oversized values in every parameter of the token, revocation and
introspection endpoints get an RFC 6749 error, never a 500."""

from __future__ import annotations

import base64
import json

import pytest

from tests.token.conftest import Client, TokenService

HOSTILE = ["\x00", "a\x00b", "\ud7ff\uffff", "x" * 5000, "💥"]
HOSTILE_IDS = ["nul", "embedded nul", "noncharacters", "5 kB", "emoji"]
ENDPOINTS = ["/oauth/token", "/oauth/revoke", "/oauth/introspect"]


@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("field", ["grant_type", "code", "redirect_uri", "client_id",
                                   "client_secret", "code_verifier", "refresh_token", "scope",
                                   "token", "token_type_hint"])
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_body_parameters(token: TokenService, client: Client, path: str, field: str,
                               value: str) -> None:
    body = {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https://x",
            "client_id": client.client_id, "client_secret": client.secret, "token": "t",
            field: value}
    for response in (
        await token.http.post(path, data=body),
        await token.http.post(path, content=json.dumps(body),
                              headers={"Content-Type": "application/json"}),
    ):
        # Revocation answers 200 for a token it does not know (RFC 7009 §2.2), so a field it
        # does not read may leave the request valid; nothing may fail on the server's side.
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert "error" in response.json()
        else:
            assert path == "/oauth/revoke" or response.json().get("active") is False


@pytest.mark.parametrize("value", HOSTILE, ids=HOSTILE_IDS)
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_basic_credentials(token: TokenService, path: str, value: str) -> None:
    raw = base64.b64encode(f"{value}:{value}".encode()).decode()
    response = await token.http.post(path, data={"grant_type": "authorization_code",
                                                 "code": "c", "token": "t"},
                                     headers={"Authorization": f"Basic {raw}"})
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_request", "invalid_client")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/oauth/token/"), ("POST", "/oauth/revoke/"), ("GET", "/.well-known/jwks.json/"),
], ids=["token", "revoke", "jwks"])
async def test_a_stray_slash_is_never_redirected_to_the_host_it_was_sent(
        token: TokenService, method: str, path: str) -> None:
    """Behind the gateway, Host could be an internal address: no absolute URL is built from it."""
    response = await token.http.request(method, path, headers={"Host": "127.0.0.1:9002"})
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
    assert "location" not in response.headers
