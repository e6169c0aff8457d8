"""Signing in and out: fixation, CSRF, ``next``, timeouts, brute force and user enumeration."""

from __future__ import annotations

import hashlib
import json
import statistics
import time

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from services.authorize.login import EXPIRED_FORM, WRONG_CREDENTIALS, safe_next
from services.authorize.users import PgUserStore
from tests.authorize.conftest import (
    PASSWORD,
    Person,
    csrf_token,
    fresh_ip,
    new_person,
    sign_in,
)

COOKIE = "otesse_session"


def session_key(redis_prefix: str, session_id: str) -> str:
    return f"{redis_prefix}authorize:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


async def attempt(browser: httpx.AsyncClient, email: str, password: str, *,
                  ip: str) -> httpx.Response:
    form = await browser.get("/login")
    return await browser.post("/login", data={
        "email": email, "password": password, "csrf_token": csrf_token(form.text)},
        headers={"X-Forwarded-For": ip})


NEXT_CASES = [
    ("root", "/", "/"),
    ("authorize path with query", "/oauth/authorize?client_id=a&state=b",
     "/oauth/authorize?client_id=a&state=b"),
    ("absolute URL", "https://evil.example/", None),
    ("protocol-relative", "//evil.example/path", None),
    ("triple slash", "///evil.example", None),
    ("backslash host", "/\\evil.example", None),
    ("backslash later", "/ok\\..\\evil", None),
    ("scheme javascript", "javascript:alert(1)", None),
    ("relative without slash", "evil.example", None),
    ("leading space", " /ok", None),
    ("tab inside", "/\t/evil.example", None),
    ("newline inside", "/ok\r\nSet-Cookie: x=1", None),
    ("non-breaking space", "/ok\u00a0x", None),
    ("empty", "", None),
    ("too long", "/" + "a" * 9000, None),
]


@pytest.mark.parametrize(("value", "expected"), [(v, e) for _, v, e in NEXT_CASES],
                         ids=[name for name, _, _ in NEXT_CASES])
def test_only_same_origin_relative_next_targets_are_followed(value: str,
                                                             expected: str | None) -> None:
    assert safe_next(value) == expected


@pytest.mark.parametrize("next_target", ["//evil.example/x", "https://evil.example/x",
                                         "/\\evil.example"],
                         ids=["protocol-relative", "absolute", "backslash"])
async def test_signing_in_with_an_unsafe_next_lands_on_the_home_page(
        browser: httpx.AsyncClient, person: Person, next_target: str) -> None:
    response = await sign_in(browser, person, next_target=next_target)
    assert response.headers["location"] == "/"


async def test_signing_in_follows_a_safe_next(browser: httpx.AsyncClient,
                                              person: Person) -> None:
    response = await sign_in(browser, person, next_target="/oauth/authorize?a=1")
    assert response.headers["location"] == "/oauth/authorize?a=1"


async def test_the_session_id_changes_at_sign_in_and_the_old_one_dies(
        browser: httpx.AsyncClient, person: Person, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    await browser.get("/login")
    before = browser.cookies[COOKIE]
    assert await redis.exists(session_key(redis_prefix, before))
    response = await sign_in(browser, person)
    after = browser.cookies[COOKIE]
    assert after != before
    assert not await redis.exists(session_key(redis_prefix, before))
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # the issuer is plain-http local development
    home = await browser.get("/")
    assert home.status_code == 200 and person.email in home.text
    assert 'href="/settings/integrations/oauth-apps"' in home.text
    assert 'href="/settings/authorized-apps"' in home.text


async def test_a_planted_session_id_is_worthless_after_the_victim_signs_in(
        authorize_url: str, person: Person) -> None:
    async with httpx.AsyncClient(base_url=authorize_url) as attacker:
        await attacker.get("/login")
        planted = attacker.cookies[COOKIE]
        async with httpx.AsyncClient(base_url=authorize_url) as victim:
            victim.cookies.set(COOKIE, planted, domain="127.0.0.1")
            await sign_in(victim, person)
            assert victim.cookies[COOKIE] != planted
        home = await attacker.get("/", follow_redirects=False)
        assert home.status_code == 303
        assert home.headers["location"] == "/login"


async def test_wrong_password_and_unknown_email_get_the_same_answer(
        browser: httpx.AsyncClient, person: Person) -> None:
    unknown = "nobody-" + person.email
    wrong = await attempt(browser, person.email, "wrong password", ip=fresh_ip())
    missing = await attempt(browser, unknown, PASSWORD, ip=fresh_ip())
    assert wrong.status_code == missing.status_code == 400
    assert WRONG_CREDENTIALS in wrong.text
    assert wrong.text.replace(person.email, "E") == missing.text.replace(unknown, "E")
    assert COOKIE not in wrong.headers.get("set-cookie", "")


async def test_unknown_email_takes_as_long_as_a_wrong_password(
        browser: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    wrong, unknown = [], []
    for _ in range(4):
        someone = await new_person(pool)
        started = time.perf_counter()
        await attempt(browser, someone.email, "wrong password", ip=fresh_ip())
        wrong.append(time.perf_counter() - started)
        started = time.perf_counter()
        await attempt(browser, "nobody-" + someone.email, "wrong password", ip=fresh_ip())
        unknown.append(time.perf_counter() - started)
    fast, slow = sorted([statistics.median(wrong), statistics.median(unknown)])
    assert fast > 0.03  # both ran a real Argon2 verification
    assert slow - fast < 0.5 * slow, (wrong, unknown)


async def test_a_disabled_user_cannot_sign_in(browser: httpx.AsyncClient, person: Person,
                                              pool: asyncpg.Pool) -> None:
    await PgUserStore(pool).set_disabled(email=person.email, disabled=True)
    response = await attempt(browser, person.email, person.password, ip=fresh_ip())
    assert response.status_code == 400
    assert WRONG_CREDENTIALS in response.text


async def test_an_account_locks_after_repeated_failures_even_for_the_right_password(
        browser: httpx.AsyncClient, person: Person) -> None:
    for _ in range(5):
        failed = await attempt(browser, person.email, "guess", ip=fresh_ip())
        assert failed.status_code == 400
    locked = await attempt(browser, person.email, person.password, ip=fresh_ip())
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.text


async def test_an_unknown_email_locks_exactly_like_a_real_one(
        browser: httpx.AsyncClient) -> None:
    email = f"ghost-{time.time_ns()}@example.com"
    statuses = [(await attempt(browser, email, "guess", ip=fresh_ip())).status_code
                for _ in range(6)]
    assert statuses == [400] * 5 + [429]


async def test_failures_slow_down_before_the_lock(browser: httpx.AsyncClient,
                                                  person: Person) -> None:
    durations = []
    for _ in range(5):
        started = time.perf_counter()
        await attempt(browser, person.email, "guess", ip=fresh_ip())
        durations.append(time.perf_counter() - started)
    # Settings: answered at once for 3 failures, then 0.05 s, then 0.1 s.
    assert durations[4] - min(durations[:3]) > 0.08, durations


async def test_an_ip_locks_after_failures_across_many_accounts(
        browser: httpx.AsyncClient, person: Person) -> None:
    # The test client is a trusted proxy (loopback), so X-Forwarded-For is read: the client is
    # the right-most untrusted hop, whatever an attacker writes to the left of it.
    ip = fresh_ip()
    for n in range(12):
        failed = await attempt(browser, f"spray-{n}-{person.email}", "guess",
                               ip=f"{fresh_ip()}, {ip}")
        assert failed.status_code == 400
    locked = await attempt(browser, person.email, person.password, ip=f"1.2.3.4, {ip}")
    assert locked.status_code == 429
    elsewhere = await attempt(browser, person.email, person.password, ip=fresh_ip())
    assert elsewhere.status_code == 303


async def test_success_clears_the_account_failures(browser: httpx.AsyncClient,
                                                   person: Person) -> None:
    for _ in range(4):
        await attempt(browser, person.email, "guess", ip=fresh_ip())
    assert (await attempt(browser, person.email, person.password, ip=fresh_ip())
            ).status_code == 303
    for _ in range(4):
        assert (await attempt(browser, person.email, "guess", ip=fresh_ip())).status_code == 400


LOGIN_CSRF_CASES = [
    ("missing token", "missing"),
    ("wrong token", "wrong"),
    ("token from another session", "other"),
    ("no session cookie", "no-cookie"),
]


@pytest.mark.parametrize("case", [c for _, c in LOGIN_CSRF_CASES],
                         ids=[name for name, _ in LOGIN_CSRF_CASES])
async def test_sign_in_needs_the_csrf_token_of_its_own_session(
        authorize_url: str, person: Person, case: str) -> None:
    async with httpx.AsyncClient(base_url=authorize_url) as victim, \
            httpx.AsyncClient(base_url=authorize_url) as attacker:
        token = csrf_token((await victim.get("/login")).text)
        other = csrf_token((await attacker.get("/login")).text)
        data = {"email": person.email, "password": person.password,
                "csrf_token": {"missing": "", "wrong": token[:-2] + "xx", "other": other,
                               "no-cookie": token}[case]}
        if case == "no-cookie":
            victim.cookies.clear()
        response = await victim.post("/login", data=data, headers={"X-Forwarded-For": fresh_ip()})
        assert response.status_code == 403
        assert EXPIRED_FORM in response.text
        assert (await victim.get("/")).status_code == 303  # not signed in


async def test_sign_out_ends_the_session(browser: httpx.AsyncClient, person: Person,
                                         redis: aioredis.Redis, redis_prefix: str) -> None:
    await sign_in(browser, person)
    session_id = browser.cookies[COOKIE]
    home = await browser.get("/")
    response = await browser.post("/logout", data={"csrf_token": csrf_token(home.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert not await redis.exists(session_key(redis_prefix, session_id))
    async with httpx.AsyncClient(base_url=str(browser.base_url),
                                 cookies={COOKIE: session_id}) as replay:
        assert (await replay.get("/")).status_code == 303


@pytest.mark.parametrize("case", ["missing", "other"],
                         ids=["missing token", "token from another session"])
async def test_sign_out_needs_the_csrf_token(browser: httpx.AsyncClient, person: Person,
                                             authorize_url: str, case: str) -> None:
    await sign_in(browser, person)
    async with httpx.AsyncClient(base_url=authorize_url) as other:
        foreign = csrf_token((await other.get("/login")).text)
    response = await browser.post("/logout", data={
        "csrf_token": "" if case == "missing" else foreign})
    assert response.status_code == 403
    assert (await browser.get("/")).status_code == 200  # still signed in


async def test_sessions_end_after_the_absolute_timeout(browser: httpx.AsyncClient,
                                                       person: Person, redis: aioredis.Redis,
                                                       redis_prefix: str) -> None:
    await sign_in(browser, person)
    key = session_key(redis_prefix, browser.cookies[COOKIE])
    raw = await redis.get(key)
    assert raw is not None
    record = json.loads(raw)
    record["created"] = time.time() - 12 * 3600 - 1
    await redis.set(key, json.dumps(record), keepttl=True)
    assert (await browser.get("/")).status_code == 303
    assert not await redis.exists(key)


async def test_sessions_end_after_the_idle_timeout_and_use_renews_it(
        browser: httpx.AsyncClient, person: Person, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    await sign_in(browser, person)
    key = session_key(redis_prefix, browser.cookies[COOKIE])
    await redis.expire(key, 100)
    assert (await browser.get("/")).status_code == 200
    assert 1790 <= await redis.ttl(key) <= 1800  # renewed to the 30-minute idle timeout
    await redis.pexpire(key, 30)
    time.sleep(0.05)
    assert (await browser.get("/")).status_code == 303


async def test_an_unreadable_session_record_counts_as_signed_out(
        browser: httpx.AsyncClient, person: Person, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    await sign_in(browser, person)
    key = session_key(redis_prefix, browser.cookies[COOKIE])
    await redis.set(key, b"\x00not json", keepttl=True)
    response = await browser.get("/")
    assert response.status_code == 303
    assert not await redis.exists(key)
