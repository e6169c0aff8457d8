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
from services.authorize.login_throttle import Attempt, RedisLoginThrottle
from services.authorize.settings import AuthorizeSettings
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


async def test_failures_slow_down_before_the_lock(
        redis: aioredis.Redis, redis_prefix: str, authorize_settings: AuthorizeSettings) -> None:
    # The throttle's verdicts, not wall time: on this busy machine one Argon2 verification
    # varies by more than the first waits.
    throttle = RedisLoginThrottle(redis, prefix=redis_prefix, settings=authorize_settings.login)
    email = f"slow-{time.time_ns()}@example.com"
    verdicts = []
    for _ in range(6):
        guess = Attempt(email=email, ip=fresh_ip())
        verdicts.append(await throttle.check(guess))
        await throttle.failed(guess)
    # Settings: answered at once for 3 failures, then 0.05 s, 0.1 s, then the lock at 5.
    assert [v.delay for v in verdicts[:5]] == [0.0, 0.0, 0.0, 0.05, 0.1]
    assert verdicts[5].locked_for > 0


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


# --- Device cookies: guessing from elsewhere cannot lock the owner out ---------------------

DEVICE_COOKIE = "otesse_device"


async def lock_out_unknown_devices(attacker: httpx.AsyncClient, email: str) -> None:
    """An attacker guessing from rotating IPs until the account locks for unknown devices."""
    statuses = [(await attempt(attacker, email, "guess", ip=fresh_ip())).status_code
                for _ in range(6)]
    assert statuses == [400] * 5 + [429]


async def test_a_successful_sign_in_leaves_a_device_cookie_stored_only_as_a_hash(
        browser: httpx.AsyncClient, person: Person, redis: aioredis.Redis,
        redis_prefix: str) -> None:
    response = await sign_in(browser, person)
    cookie = next(header for header in response.headers.get_list("set-cookie")
                  if header.startswith(DEVICE_COOKIE + "="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=lax" in cookie.lower()
    device_id = browser.cookies[DEVICE_COOKIE]
    assert device_id != browser.cookies[COOKIE]
    key = f"{redis_prefix}authorize:device:{hashlib.sha256(device_id.encode()).hexdigest()}"
    assert await redis.get(key) == person.user_id.encode()
    assert 0 < await redis.ttl(key) <= 3600
    assert not [k async for k in redis.scan_iter(match=f"*{device_id}*")]


async def test_guessing_from_rotating_ips_no_longer_locks_the_owner_out_of_a_known_device(
        browser: httpx.AsyncClient, authorize_url: str, person: Person) -> None:
    await sign_in(browser, person)  # the owner's browser: a known device from now on
    await browser.post("/logout", data={"csrf_token": csrf_token((await browser.get("/")).text)})
    async with httpx.AsyncClient(base_url=authorize_url, timeout=10.0) as attacker:
        await lock_out_unknown_devices(attacker, person.email)
        # The lock holds for every unknown device, the right password included.
        locked = await attempt(attacker, person.email, person.password, ip=fresh_ip())
        assert locked.status_code == 429

    owner = await attempt(browser, person.email, person.password, ip=fresh_ip())

    assert owner.status_code == 303
    assert (await browser.get("/")).status_code == 200


async def test_a_stolen_device_cookie_is_throttled_on_its_own(
        browser: httpx.AsyncClient, authorize_url: str, person: Person) -> None:
    await sign_in(browser, person)
    stolen = browser.cookies[DEVICE_COOKIE]
    async with httpx.AsyncClient(base_url=authorize_url, timeout=10.0) as thief, \
            httpx.AsyncClient(base_url=authorize_url, timeout=10.0) as laptop:
        await sign_in(laptop, person)  # the owner's second known device
        thief.cookies.set(DEVICE_COOKIE, stolen)
        statuses = [(await attempt(thief, person.email, "guess", ip=fresh_ip())).status_code
                    for _ in range(5)]
        # Settings: a known device locks after 4 failures, the right password included.
        assert statuses == [400] * 4 + [429]
        assert (await attempt(thief, person.email, person.password, ip=fresh_ip())
                ).status_code == 429
        # The owner's browser shares that device: locked too. The laptop is another device.
        assert (await attempt(browser, person.email, person.password, ip=fresh_ip())
                ).status_code == 429
        assert (await attempt(laptop, person.email, person.password, ip=fresh_ip())
                ).status_code == 303


async def test_a_device_cookie_counts_only_for_its_own_account(
        browser: httpx.AsyncClient, pool: asyncpg.Pool, person: Person) -> None:
    await sign_in(browser, person)  # a known device of person, and of person only
    victim = await new_person(pool)
    # Against another account the cookie is an unknown device: that account's budget.
    statuses = [(await attempt(browser, victim.email, "guess", ip=fresh_ip())).status_code
                for _ in range(6)]
    assert statuses == [400] * 5 + [429]
    assert (await attempt(browser, victim.email, victim.password, ip=fresh_ip())
            ).status_code == 429


async def test_guessing_one_account_from_one_ip_locks_that_pair_first(
        browser: httpx.AsyncClient, authorize_url: str, person: Person) -> None:
    ip = fresh_ip()
    statuses = [(await attempt(browser, person.email, "guess", ip=ip)).status_code
                for _ in range(4)]
    # Settings: 3 failures of one account from one IP lock that pair (the account's own
    # lock for unknown devices is at 5).
    assert statuses == [400] * 3 + [429]
    assert (await attempt(browser, person.email, person.password, ip=ip)).status_code == 429
    async with httpx.AsyncClient(base_url=authorize_url, timeout=10.0) as elsewhere:
        assert (await attempt(elsewhere, person.email, person.password, ip=fresh_ip())
                ).status_code == 303


async def test_a_forged_device_cookie_is_an_unknown_device(
        browser: httpx.AsyncClient, person: Person) -> None:
    browser.cookies.set(DEVICE_COOKIE, "made-up-device-id")
    await lock_out_unknown_devices(browser, person.email)
    assert (await attempt(browser, person.email, person.password, ip=fresh_ip())
            ).status_code == 429


async def test_an_unknown_email_with_a_device_cookie_answers_like_a_wrong_password(
        browser: httpx.AsyncClient, pool: asyncpg.Pool, person: Person) -> None:
    await sign_in(browser, person)
    other = await new_person(pool)
    unknown = "nobody-" + other.email
    wrong = await attempt(browser, other.email, "wrong password", ip=fresh_ip())
    missing = await attempt(browser, unknown, "wrong password", ip=fresh_ip())
    assert wrong.status_code == missing.status_code == 400
    assert wrong.text.replace(other.email, "E") == missing.text.replace(unknown, "E")
