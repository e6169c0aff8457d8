"""The consent screen, the decision, remembered consent, ``prompt``, and the codes issued."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any, cast

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2

from otesse.auth.v1 import authorization_code_pb2, registry_pb2, registry_pb2_grpc
from services.authorize.users import PgUserStore
from services.common import credentials
from tests.authorize.conftest import (
    ISSUER,
    LOOPBACK_REDIRECT,
    REDIRECT_URI,
    App,
    Person,
    authorize_params,
    csrf_token,
    new_person,
    query,
    register,
    request_id,
    sign_in,
)
from tests.images import image_bytes

CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def authorize(browser: httpx.AsyncClient, app: App, **params: Any) -> httpx.Response:
    return await browser.get("/oauth/authorize", params=authorize_params(app, **params))


async def consent_screen(browser: httpx.AsyncClient, app: App, **params: Any) -> httpx.Response:
    response = await authorize(browser, app, **params)
    assert response.status_code == 200, response.headers.get("location")
    assert 'name="decision"' in response.text
    return response


async def decide(browser: httpx.AsyncClient, screen: httpx.Response, decision: str,
                 **overrides: str) -> httpx.Response:
    data = {"csrf_token": csrf_token(screen.text), "request_id": request_id(screen.text),
            "decision": decision, **overrides}
    return await browser.post("/oauth/authorize/decision", data=data)


async def code_record(redis: aioredis.Redis, redis_prefix: str, code: str,
                      ) -> tuple[authorization_code_pb2.AuthorizationCodeRecord, int]:
    key = credentials.authorization_code_key(redis_prefix, code)
    raw = await redis.get(key)
    assert isinstance(raw, bytes), "no record for this code"
    record = authorization_code_pb2.AuthorizationCodeRecord()
    record.ParseFromString(raw)
    return record, await redis.ttl(key)


def code_of(response: httpx.Response, redirect_uri: str = REDIRECT_URI,
            state: str | None = "xyz-state") -> str:
    location = response.headers["location"]
    assert location.startswith(redirect_uri + ("&" if "?" in redirect_uri else "?"))
    params = query(location)
    assert params["iss"] == [ISSUER]
    assert params.get("state") == ([state] if state is not None else None)
    assert "error" not in params
    return params["code"][0]


async def test_the_consent_screen_says_who_asks_for_what(
        browser: httpx.AsyncClient, app: App, person: Person) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, app, scope="bookings:read customers:read")
    page = screen.text
    assert "Bookings Pro</span> wants to\n    access your Otesse account" in page
    assert "Keeps your calendar in sync with your Otesse bookings." in page
    assert f'src="/apps/{app.client_id}/logo?v=' in page
    assert "See your bookings and their details" in page
    assert "See your customers and their contact details" in page
    assert "Create, change and cancel bookings" not in page  # not requested
    assert "app.example.com" in page and person.email in page
    assert "Switch account" in page
    assert re.search(r'<button[^>]*name="decision" value="approve"[^>]*>Approve</button>', page)
    assert re.search(r'<button[^>]*name="decision" value="deny"[^>]*>Deny</button>', page)
    assert 'name="viewport"' in page  # laid out for phones too
    headers = screen.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "form-action 'self' https://app.example.com;" in csp
    assert "script-src" not in csp and "<script" not in page and "style=" not in page


async def test_an_app_without_a_logo_gets_a_letter_avatar(
        browser: httpx.AsyncClient, public_app: App, person: Person) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, public_app, scope="bookings:read",
                                  code_challenge=CHALLENGE, code_challenge_method="S256")
    assert re.search(r'<span class="app-logo avatar avatar-\d">P</span>', screen.text)
    assert "/logo" not in screen.text


async def test_approve_issues_a_code_whose_record_holds_the_request(
        browser: httpx.AsyncClient, app: App, person: Person, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    before = time.time()
    await sign_in(browser, person)
    screen = await consent_screen(browser, app, code_challenge=CHALLENGE,
                                  code_challenge_method="S256")
    response = await decide(browser, screen, "approve")
    assert response.status_code == 303
    assert response.headers["cache-control"] == "no-store"
    code = code_of(response)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", code)  # 256 random bits, base64url
    record, ttl = await code_record(redis, redis_prefix, code)
    assert 55 <= ttl <= 60
    assert record.client_id == app.client_id
    assert record.redirect_uri == REDIRECT_URI
    assert record.user_id == person.user_id
    assert list(record.scopes) == ["bookings:read", "customers:read"]
    assert record.code_challenge == CHALLENGE
    assert record.code_challenge_method == "S256"
    assert before - 1 <= record.auth_time.ToDatetime().timestamp() <= time.time() + 1
    assert before - 1 <= record.issued_at.ToDatetime().timestamp() <= time.time() + 1
    # Only the hash of the code is stored: the key is its SHA-256, the code appears nowhere.
    assert credentials.authorization_code_key(redis_prefix, code).endswith(
        hashlib.sha256(code.encode()).hexdigest())
    assert not [key async for key in redis.scan_iter(match=f"*{code}*")]


async def test_a_confidential_client_may_omit_pkce(browser: httpx.AsyncClient, app: App,
                                                   person: Person, redis: aioredis.Redis,
                                                   redis_prefix: str) -> None:
    await sign_in(browser, person)
    response = await decide(browser, await consent_screen(browser, app), "approve")
    record, _ = await code_record(redis, redis_prefix, code_of(response))
    assert record.code_challenge == "" and record.code_challenge_method == ""


async def test_the_code_redirect_keeps_the_registered_query(
        browser: httpx.AsyncClient, app: App, person: Person) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, app, redirect_uri=LOOPBACK_REDIRECT)
    assert "form-action 'self' http://127.0.0.1:8765;" in screen.headers[
        "content-security-policy"]
    response = await decide(browser, screen, "approve")
    code_of(response, LOOPBACK_REDIRECT)
    assert query(response.headers["location"])["source"] == ["otesse"]


async def test_deny_sends_access_denied_and_remembers_nothing(
        browser: httpx.AsyncClient, app: App, person: Person) -> None:
    await sign_in(browser, person)
    response = await decide(browser, await consent_screen(browser, app), "deny")
    assert response.status_code == 303
    params = query(response.headers["location"])
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["xyz-state"] and params["iss"] == [ISSUER]
    assert "code" not in params
    await consent_screen(browser, app)  # asked again


async def test_consent_is_remembered_for_the_same_or_fewer_scopes(
        browser: httpx.AsyncClient, app: App, person: Person, pool: asyncpg.Pool) -> None:
    await sign_in(browser, person)
    await decide(browser, await consent_screen(browser, app), "approve")
    same = await authorize(browser, app)
    assert same.status_code == 302
    code_of(same)
    narrower = await authorize(browser, app, scope="customers:read")
    assert narrower.status_code == 302
    code_of(narrower)
    wider = await consent_screen(browser, app, scope="bookings:read bookings:write")
    await decide(browser, wider, "approve")
    row = await pool.fetchrow("SELECT scopes FROM authorize.consents WHERE user_id = $1::uuid"
                              " AND client_id = $2", person.user_id, app.client_id)
    assert row is not None
    assert sorted(row["scopes"]) == ["bookings:read", "bookings:write", "customers:read"]
    everything = await authorize(browser, app,
                                 scope="bookings:read bookings:write customers:read")
    assert everything.status_code == 302
    code_of(everything)


async def test_prompt_consent_shows_the_screen_again(browser: httpx.AsyncClient, app: App,
                                                     person: Person) -> None:
    await sign_in(browser, person)
    await decide(browser, await consent_screen(browser, app), "approve")
    await consent_screen(browser, app, prompt="consent")


PROMPT_NONE_CASES = [
    ("signed out", False, False, "login_required"),
    ("signed in without consent", True, False, "consent_required"),
    ("signed in with consent", True, True, None),
]


@pytest.mark.parametrize(("signed_in", "consented", "error"),
                         [c[1:] for c in PROMPT_NONE_CASES],
                         ids=[c[0] for c in PROMPT_NONE_CASES])
async def test_prompt_none_never_shows_a_page(browser: httpx.AsyncClient, app: App,
                                              person: Person, signed_in: bool,
                                              consented: bool, error: str | None) -> None:
    if signed_in:
        await sign_in(browser, person)
    if consented:
        await decide(browser, await consent_screen(browser, app), "approve")
    response = await authorize(browser, app, prompt="none")
    assert response.status_code == 302
    if error is None:
        code_of(response)
        return
    params = query(response.headers["location"])
    assert response.headers["location"].startswith(REDIRECT_URI + "?")
    assert params["error"] == [error]
    assert params["state"] == ["xyz-state"] and params["iss"] == [ISSUER]


async def test_signed_out_users_go_to_login_and_come_back(browser: httpx.AsyncClient,
                                                          app: App, person: Person) -> None:
    first = await authorize(browser, app)
    assert first.status_code == 302
    next_target = query(first.headers["location"])["next"][0]
    assert next_target.startswith("/oauth/authorize?")
    login_page = await browser.get(first.headers["location"])
    assert "to continue to <strong>Bookings Pro</strong>" in login_page.text
    assert "form-action 'self' https://app.example.com;" in login_page.headers[
        "content-security-policy"]
    signed_in = await sign_in(browser, person, next_target=next_target)
    assert signed_in.headers["location"] == next_target
    assert (await browser.get(next_target)).status_code == 200


async def test_prompt_login_asks_for_a_fresh_sign_in(browser: httpx.AsyncClient, app: App,
                                                     person: Person, redis: aioredis.Redis,
                                                     redis_prefix: str) -> None:
    await sign_in(browser, person)
    await decide(browser, await consent_screen(browser, app), "approve")
    first_auth = time.time()
    await asyncio.sleep(1.1)  # auth_time is kept in whole seconds in the code record
    response = await authorize(browser, app, prompt="login consent")
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")
    # The way back is the request itself: without a sign-in it only leads here again.
    next_target = query(response.headers["location"])["next"][0]
    assert query(next_target)["prompt"] == ["login consent"]
    again = await browser.get(next_target)
    assert again.status_code == 302 and again.headers["location"].startswith("/login?next=")
    response = await authorize(browser, app, prompt="login")
    next_target = query(response.headers["location"])["next"][0]

    signed_in = await sign_in(browser, person, next_target=next_target)

    # The sign-in that prompt=login asked for has happened: it drops it from the way back.
    back_target = signed_in.headers["location"]
    assert back_target.startswith("/oauth/authorize?") and "prompt" not in query(back_target)
    back = await browser.get(back_target)
    record, _ = await code_record(redis, redis_prefix, code_of(back))
    assert record.auth_time.ToDatetime().timestamp() >= first_auth + 1


DECISION_CSRF_CASES = ["missing", "wrong", "other-session"]


@pytest.mark.parametrize("case", DECISION_CSRF_CASES,
                         ids=["missing token", "wrong token", "token from another session"])
async def test_the_decision_needs_the_csrf_token_of_its_session(
        browser: httpx.AsyncClient, authorize_url: str, app: App, person: Person,
        pool: asyncpg.Pool, case: str) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, app)
    async with httpx.AsyncClient(base_url=authorize_url) as attacker:
        await sign_in(attacker, await new_person(pool))
        foreign = csrf_token((await consent_screen(attacker, app)).text)
    token = {"missing": "", "wrong": csrf_token(screen.text)[::-1],
             "other-session": foreign}[case]
    refused = await decide(browser, screen, "approve", csrf_token=token)
    assert refused.status_code == 403
    assert "location" not in refused.headers
    assert "This form has expired" in refused.text
    # The real form still works: a refused forgery consumed nothing.
    code_of(await decide(browser, screen, "approve"))


async def test_a_decision_is_taken_once(browser: httpx.AsyncClient, app: App,
                                        person: Person) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, app)
    code_of(await decide(browser, screen, "approve"))
    replay = await decide(browser, screen, "approve")
    assert replay.status_code == 400
    assert "expired or was already answered" in replay.text


async def test_a_pending_request_is_bound_to_its_session(
        browser: httpx.AsyncClient, authorize_url: str, app: App, person: Person,
        pool: asyncpg.Pool) -> None:
    await sign_in(browser, person)
    victim_screen = await consent_screen(browser, app)
    async with httpx.AsyncClient(base_url=authorize_url) as attacker:
        await sign_in(attacker, await new_person(pool))
        own = await consent_screen(attacker, app)
        stolen = await attacker.post("/oauth/authorize/decision", data={
            "csrf_token": csrf_token(own.text), "request_id": request_id(victim_screen.text),
            "decision": "approve"})
    assert stolen.status_code == 400
    assert "location" not in stolen.headers


async def test_a_redirect_uri_removed_while_the_screen_was_open_is_not_used(
        browser: httpx.AsyncClient, person: Person,
        registry: registry_pb2_grpc.ClientRegistryStub) -> None:
    short_lived = await register(registry, name="Short Lived", redirect_uris=[
        REDIRECT_URI, "https://other.example.com/cb"], scopes=["bookings:read"])
    await sign_in(browser, person)
    screen = await consent_screen(browser, short_lived, scope="bookings:read")
    stub = cast("registry_pb2_grpc.ClientRegistryAsyncStub", registry)
    await stub.UpdateClient(registry_pb2.UpdateClientRequest(
        client_id=short_lived.client_id, redirect_uris=["https://other.example.com/cb"],
        update_mask=field_mask_pb2.FieldMask(paths=["redirect_uris"])))
    await asyncio.sleep(0.35)  # the test service's client cache (0.3 s) runs out
    response = await decide(browser, screen, "approve")
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_an_unknown_decision_is_refused(browser: httpx.AsyncClient, app: App,
                                              person: Person) -> None:
    await sign_in(browser, person)
    screen = await consent_screen(browser, app)
    response = await decide(browser, screen, "maybe")
    assert response.status_code == 400
    assert "Choose Approve or Deny" in response.text


async def test_a_disabled_user_loses_their_session(browser: httpx.AsyncClient, app: App,
                                                   person: Person, pool: asyncpg.Pool) -> None:
    await sign_in(browser, person)
    await PgUserStore(pool).set_disabled(email=person.email, disabled=True)
    response = await authorize(browser, app)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")
    assert (await browser.get("/")).status_code == 303


@pytest.mark.parametrize("page", ["/settings/integrations/oauth-apps",
                                  "/settings/authorized-apps"],
                         ids=["oauth-apps", "authorized-apps"])
async def test_a_user_disabled_while_the_consent_screen_is_open_cannot_approve(
        browser: httpx.AsyncClient, app: App, person: Person, pool: asyncpg.Pool,
        page: str) -> None:
    """One check for every page: the decision, like the settings pages, signs out a user
    whose account was disabled since the screen was shown, and issues nothing."""
    await sign_in(browser, person)
    screen = await consent_screen(browser, app)
    await PgUserStore(pool).set_disabled(email=person.email, disabled=True)
    refused = await decide(browser, screen, "approve")
    assert refused.status_code == 403
    assert "location" not in refused.headers
    assert "This form has expired" in refused.text
    # The session is gone: re-enabled, the user is still signed out everywhere.
    await PgUserStore(pool).set_disabled(email=person.email, disabled=False)
    settings = await browser.get(page)
    assert settings.status_code == 302
    assert settings.headers["location"].startswith("/login?next=")
    assert (await authorize(browser, app)).headers["location"].startswith("/login?next=")


async def test_every_code_is_new(browser: httpx.AsyncClient, app: App, person: Person) -> None:
    await sign_in(browser, person)
    await decide(browser, await consent_screen(browser, app), "approve")
    codes = {code_of(await authorize(browser, app)) for _ in range(5)}
    assert len(codes) == 5


async def test_the_logo_is_served_with_its_type_and_etag(browser: httpx.AsyncClient,
                                                         app: App) -> None:
    response = await browser.get(f"/apps/{app.client_id}/logo")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == image_bytes()
    etag = response.headers["etag"]
    assert etag == f'"{hashlib.sha256(image_bytes()).hexdigest()}"'
    assert "max-age" in response.headers["cache-control"]
    again = await browser.get(f"/apps/{app.client_id}/logo", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content


@pytest.mark.parametrize("which", ["unknown", "no-logo"], ids=["unknown app", "app without logo"])
async def test_no_logo_is_a_404_page(browser: httpx.AsyncClient, public_app: App,
                                     which: str) -> None:
    client_id = "otesse_ci_nope" if which == "unknown" else public_app.client_id
    response = await browser.get(f"/apps/{client_id}/logo")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_head_issues_no_code(browser: httpx.AsyncClient, app: App, person: Person,
                                   redis: aioredis.Redis, redis_prefix: str) -> None:
    await sign_in(browser, person)
    await decide(browser, await consent_screen(browser, app), "approve")
    pattern = f"{redis_prefix}authorize:code:*"
    before = {key async for key in redis.scan_iter(match=pattern)}
    response = await browser.head("/oauth/authorize", params=authorize_params(app))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert {key async for key in redis.scan_iter(match=pattern)} - before == set()
