"""POST /oauth/token: the documented shape, both content types, every client-authentication
method, and every way a request can be wrong (RFC 6749 §2.3.1, §3.2, §5)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis.asyncio as aioredis

from services.common import credentials
from tests.token.conftest import (
    REDIRECT_URI,
    SCOPES,
    VERIFIER,
    Client,
    TokenService,
    exchange,
    issue_code,
)


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def assert_token_response(response: Any, scope: str = " ".join(SCOPES)) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert list(body) == ["access_token", "refresh_token", "token_type", "expires_in", "scope"]
    assert body["access_token"].startswith("otesse_at_")
    assert credentials.is_well_formed(body["refresh_token"], "otesse_rt_")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == scope
    return body


async def test_documented_json_exchange(token: TokenService, redis: aioredis.Redis,
                                        redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    assert_token_response(await exchange(token.http, client, code))


async def test_form_exchange_with_client_secret_post(token: TokenService, redis: aioredis.Redis,
                                                     redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    response = await token.http.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "client_id": client.client_id, "client_secret": client.secret})
    assert_token_response(response)


async def test_basic_credentials_are_form_decoded(token: TokenService, redis: aioredis.Redis,
                                                  redis_prefix: str, client: Client) -> None:
    # RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding; percent-encode
    # every character so that only a decoding server can match them.
    def encode_all(value: str) -> str:
        return "".join(f"%{byte:02X}" for byte in value.encode())

    raw = f"{encode_all(client.client_id)}:{encode_all(client.secret)}".encode()
    code = await issue_code(redis, redis_prefix, client)
    response = await token.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()})
    assert_token_response(response)


async def test_basic_with_matching_client_id_in_body(token: TokenService, redis: aioredis.Redis,
                                                     redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    response = await token.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "client_id": client.client_id},
        headers={"Authorization": basic(client.client_id, client.secret)})
    assert_token_response(response)


async def test_public_client_with_pkce(token: TokenService, redis: aioredis.Redis,
                                       redis_prefix: str, public_client: Client) -> None:
    code = await issue_code(redis, redis_prefix, public_client, verifier=VERIFIER)
    assert_token_response(await exchange(token.http, public_client, code,
                                         code_verifier=VERIFIER))


async def test_confidential_client_with_pkce(token: TokenService, redis: aioredis.Redis,
                                             redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client, verifier=VERIFIER)
    assert_token_response(await exchange(token.http, client, code, code_verifier=VERIFIER))


async def test_form_with_trailing_separator(token: TokenService, redis: aioredis.Redis,
                                            redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "client_id": client.client_id, "client_secret": client.secret}
    response = await token.http.post(
        "/oauth/token", content=urlencode(fields) + "&",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_token_response(response)


async def test_unknown_parameters_are_ignored(token: TokenService, redis: aioredis.Redis,
                                              redis_prefix: str, client: Client) -> None:
    code = await issue_code(redis, redis_prefix, client)
    assert_token_response(await exchange(token.http, client, code, state="x", foo="bar"))


# Each case: how to build the request from (client, public client, a fresh code), and the
# expected status and error. Every case uses a fresh, valid code, so the failure is the one
# the case names.
Case = tuple[str, int, str, bool]
CONF = "confidential"
PUB = "public"


def _body(kind: str, client: Client, fresh_code: str,
          changes: dict[str, str | None]) -> dict[str, str]:
    body: dict[str, str | None] = {"grant_type": "authorization_code", "code": fresh_code,
                                   "redirect_uri": REDIRECT_URI, "client_id": client.client_id}
    if kind == CONF:
        body["client_secret"] = client.secret
    else:
        body["code_verifier"] = VERIFIER
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


ERROR_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (id, client kind, request changes, status, error)
    ("missing grant_type", CONF, {"body": {"grant_type": None}}, 400, "invalid_request"),
    ("unknown grant_type", CONF, {"body": {"grant_type": "password"}}, 400,
     "unsupported_grant_type"),
    ("client_credentials unsupported", CONF, {"body": {"grant_type": "client_credentials"}},
     400, "unsupported_grant_type"),
    ("missing code", CONF, {"body": {"code": None}}, 400, "invalid_request"),
    ("missing redirect_uri", CONF, {"body": {"redirect_uri": None}}, 400, "invalid_request"),
    ("empty code counts as missing", CONF, {"body": {"code": ""}}, 400, "invalid_request"),
    ("unknown code", CONF, {"body": {"code": "not-a-code"}}, 400, "invalid_grant"),
    ("overlong code", CONF, {"body": {"code": "x" * 300}}, 400, "invalid_grant"),
    ("redirect_uri differs", CONF, {"body": {"redirect_uri": REDIRECT_URI + "/"}}, 400,
     "invalid_grant"),
    ("code of another client", CONF, {"other_client_code": True}, 400, "invalid_grant"),
    ("no client authentication", CONF, {"body": {"client_id": None, "client_secret": None}},
     401, "invalid_client"),
    ("wrong secret", CONF, {"body": {"client_secret": "otesse_cs_wrong"}}, 401,
     "invalid_client"),
    ("unknown client", CONF, {"body": {"client_id": "otesse_ci_unknown"}}, 401,
     "invalid_client"),
    ("overlong client_id", CONF, {"body": {"client_id": "c" * 200}}, 401, "invalid_client"),
    ("confidential client without secret", CONF, {"body": {"client_secret": None}}, 401,
     "invalid_client"),
    ("basic and post at once", CONF, {"basic": True}, 400, "invalid_request"),
    ("basic with wrong secret", CONF, {"basic_secret": "otesse_cs_wrong",
                                       "body": {"client_secret": None}}, 401, "invalid_client"),
    ("basic with an empty secret", PUB, {"basic_secret": "", "body": {"client_secret": None}},
     401, "invalid_client"),
    ("basic not base64", CONF, {"authorization": "Basic ***", "body": {"client_secret": None}},
     401, "invalid_client"),
    ("basic without colon", CONF, {"authorization": "Basic " + base64.b64encode(b"abc")
                                   .decode(), "body": {"client_secret": None}}, 401,
     "invalid_client"),
    ("bearer scheme", CONF, {"authorization": "Bearer abc", "body": {"client_secret": None}},
     401, "invalid_client"),
    ("basic id differs from body id", CONF, {"basic": True, "body": {
        "client_secret": None, "client_id": "otesse_ci_other"}}, 400, "invalid_request"),
    ("public client with a secret", PUB, {"body": {"client_secret": "otesse_cs_x"}}, 401,
     "invalid_client"),
    ("public client without verifier", PUB, {"body": {"code_verifier": None}}, 400,
     "invalid_request"),
    ("public client code without challenge", PUB, {"no_challenge": True}, 400,
     "invalid_grant"),
    ("wrong verifier", PUB, {"body": {"code_verifier": "w" * 43}}, 400, "invalid_grant"),
    ("verifier too short", PUB, {"body": {"code_verifier": "w" * 42}}, 400,
     "invalid_request"),
    ("verifier too long", PUB, {"body": {"code_verifier": "w" * 129}}, 400,
     "invalid_request"),
    ("verifier with a bad character", PUB, {"body": {"code_verifier": "w" * 42 + "+"}}, 400,
     "invalid_request"),
    ("verifier sent without challenge", CONF, {"body": {"code_verifier": VERIFIER}}, 400,
     "invalid_grant"),
    ("challenge recorded, verifier missing", CONF, {"challenge": True}, 400,
     "invalid_grant"),
    ("plain challenge method", PUB, {"method": "plain"}, 400, "invalid_grant"),
    ("other content type", CONF, {"content_type": "text/plain"}, 400, "invalid_request"),
    ("no content type", CONF, {"content_type": ""}, 400, "invalid_request"),
    ("multipart body", CONF, {"content_type": "multipart/form-data; boundary=x"}, 400,
     "invalid_request"),
    ("repeated form parameter", CONF, {"raw_form_suffix": "&grant_type=authorization_code"},
     400, "invalid_request"),
    ("repeated JSON member", CONF, {"raw_json_suffix": ', "code": "again"'}, 400,
     "invalid_request"),
    ("JSON not an object", CONF, {"raw": ("application/json", b'["grant_type"]')}, 400,
     "invalid_request"),
    ("JSON not valid", CONF, {"raw": ("application/json", b'{"grant_type": ')}, 400,
     "invalid_request"),
    ("JSON value not a string", CONF, {"json_value": ("code", 12345)}, 400,
     "invalid_request"),
    ("form body not UTF-8", CONF, {"raw": ("application/x-www-form-urlencoded",
                                           b"grant_type=\xff\xfe")}, 400, "invalid_request"),
    ("NUL in client_id", CONF, {"body": {"client_id": "otesse_ci_\x00"}}, 400,
     "invalid_request"),
    ("newline in code", CONF, {"body": {"code": "abc\ndef"}}, 400, "invalid_request"),
    ("body too large", CONF, {"raw": ("application/x-www-form-urlencoded",
                                      b"a=" + b"b" * 20000)}, 413, "invalid_request"),
]


@pytest.mark.parametrize(("kind", "changes", "status", "error"),
                         [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
async def test_token_request_errors(token: TokenService, redis: aioredis.Redis,
                                    redis_prefix: str, client: Client, public_client: Client,
                                    kind: str, changes: dict[str, Any], status: int,
                                    error: str) -> None:
    subject = client if kind == CONF else public_client
    if changes.get("other_client_code"):
        code = await issue_code(redis, redis_prefix, public_client, verifier=VERIFIER)
    elif changes.get("no_challenge"):
        code = await issue_code(redis, redis_prefix, subject)
    elif changes.get("challenge"):
        code = await issue_code(redis, redis_prefix, subject, verifier=VERIFIER)
    elif kind == PUB:
        code = await issue_code(redis, redis_prefix, subject, verifier=VERIFIER,
                                method=changes.get("method", "S256"))
    else:
        code = await issue_code(redis, redis_prefix, subject)
    body = _body(kind, subject, code, changes.get("body", {}))
    headers: dict[str, str] = {}
    if changes.get("basic"):
        headers["Authorization"] = basic(subject.client_id, subject.secret)
    if "basic_secret" in changes:
        headers["Authorization"] = basic(subject.client_id, changes["basic_secret"])
    if "authorization" in changes:
        headers["Authorization"] = changes["authorization"]
    if "json_value" in changes:
        name, value = changes["json_value"]
        content = json.dumps({**body, name: value}).encode()
        headers["Content-Type"] = "application/json"
    elif "raw_json_suffix" in changes:
        content = json.dumps(body).encode()[:-1] + changes["raw_json_suffix"].encode() + b"}"
        headers["Content-Type"] = "application/json"
    elif "raw" in changes:
        headers["Content-Type"], content = changes["raw"]
    else:
        content = (urlencode(body) + changes.get("raw_form_suffix", "")).encode()
        headers["Content-Type"] = changes.get("content_type",
                                              "application/x-www-form-urlencoded")
        if not headers["Content-Type"]:
            del headers["Content-Type"]
    response = await token.http.post("/oauth/token", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"
    used_basic = "Authorization" in headers
    if status == 401 and used_basic:
        assert response.headers["www-authenticate"] == 'Basic realm="otesse"'
    if status == 401 and not used_basic:
        assert "www-authenticate" not in response.headers


async def test_get_is_not_allowed(token: TokenService) -> None:
    response = await token.http.get("/oauth/token")
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"
