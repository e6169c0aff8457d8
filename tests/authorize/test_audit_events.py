"""The authorize service's audit events, caused through its pages over real HTTP: sign-ins that
succeed, fail or are refused; consent given and withdrawn; an app registered, changed, its
secret rotated, deleted — and the grants the token service revokes for the user, which carry
the user and the address the authorize service passed on. Then the app's page, which shows its
events to its owner and to nobody else. Nothing typed into a failed sign-in is kept."""

from __future__ import annotations

import html
import json
import re
import secrets
from typing import Any

import asyncpg
import httpx

from tests.audit_rows import of_request, rows_holding
from tests.authorize.conftest import Person, csrf_token, new_person
from tests.authorize.settings_stack import (
    APPS,
    CALLBACK,
    Pages,
    Registered,
    User,
    grant_tokens,
    register,
)

pytest_plugins = ["tests.authorize.settings_fixtures"]


def fresh_request_id() -> str:
    return "audit-" + secrets.token_hex(8)


def fresh_ip() -> str:
    return f"198.51.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def who(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["event_type"], row["actor_kind"], row["actor_id"], row["subject_user_id"],
            row["client_id"], row["client_ip"], json.loads(row["details"]))


async def sign_in_attempt(pages: Pages, email: str, password: str, *, ip: str,
                          request_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=pages.url, timeout=10.0) as browser:
        form = await browser.get("/login")
        return await browser.post("/login", data={
            "email": email, "password": password, "csrf_token": csrf_token(form.text)},
            headers={"X-Forwarded-For": ip, "X-Request-ID": request_id})


async def test_a_sign_in_is_recorded_as_the_users(pages: Pages, pool: asyncpg.Pool) -> None:
    person = await new_person(pool)
    rid, ip = fresh_request_id(), fresh_ip()
    response = await sign_in_attempt(pages, person.email, person.password, ip=ip,
                                     request_id=rid)
    assert response.status_code == 303
    (row,) = await of_request(pool, rid)
    assert who(row) == ("sign_in.succeeded", "user", person.user_id, person.user_id, None, ip,
                        {"device": "new"})


async def test_failed_sign_ins_name_the_account_only_when_it_exists_and_keep_nothing_typed(
        pages: Pages, pool: asyncpg.Pool) -> None:
    person = await new_person(pool)
    disabled = await new_person(pool)
    await pool.execute("UPDATE authorize.users SET disabled_at = now() WHERE user_id = $1::uuid",
                       disabled.user_id)
    # Someone types a password into the email field: it must not land in the trail either.
    typed_password = "my-secret-passphrase-" + secrets.token_hex(4)
    attempts = [
        (person.email, "a wrong guess " + secrets.token_hex(4),
         (person.user_id, "wrong_password")),
        ("nobody-" + secrets.token_hex(4) + "@example.com", "a guess " + secrets.token_hex(4),
         (None, "unknown_account")),
        (typed_password, typed_password, (None, "unknown_account")),
        (disabled.email, disabled.password, (disabled.user_id, "account_disabled")),
    ]
    after = await pool.fetchval("SELECT coalesce(max(event_id), 0) FROM audit.events")
    for email, password, (subject, reason) in attempts:
        rid, ip = fresh_request_id(), fresh_ip()
        response = await sign_in_attempt(pages, email, password, ip=ip, request_id=rid)
        assert response.status_code == 400
        (row,) = await of_request(pool, rid)
        assert who(row) == ("sign_in.failed", "anonymous", "anonymous", subject, None, ip,
                            {"device": "new", "reason": reason})
    typed = [value for email, password, _ in attempts for value in (email, password)]
    found = await rows_holding(pool, typed + [person.password], after=after)
    assert found == []


async def test_a_sign_in_refused_by_the_lock_is_recorded(pages: Pages, pool: asyncpg.Pool,
                                                         ) -> None:
    person = await new_person(pool)
    ip = fresh_ip()
    for _ in range(3):  # account_ip_lock_after in tests/authorize/conftest.py
        await sign_in_attempt(pages, person.email, "guess", ip=ip,
                              request_id=fresh_request_id())
    rid = fresh_request_id()
    refused = await sign_in_attempt(pages, person.email, person.password, ip=ip,
                                    request_id=rid)
    assert refused.status_code == 429
    (row,) = await of_request(pool, rid)
    details = json.loads(row["details"])
    assert who(row)[:6] == ("sign_in.locked", "anonymous", "anonymous", person.user_id, None,
                            ip)
    assert details["device"] == "new" and 0 < details["locked_for_seconds"] <= 60


async def approve(user: User, client_id: str, *, ip: str, request_id: str) -> None:
    params = {"client_id": client_id, "redirect_uri": CALLBACK, "response_type": "code",
              "scope": "bookings:read", "state": "s", "prompt": "consent"}
    screen = await user.http.get("/oauth/authorize", params=params)
    assert screen.status_code == 200, screen.text
    pending = re.search(r'name="request_id" value="([^"]+)"', screen.text)
    assert pending
    decided = await user.http.post("/oauth/authorize/decision", data={
        "csrf_token": csrf_token(screen.text), "request_id": html.unescape(pending.group(1)),
        "decision": "approve"}, headers={"X-Forwarded-For": ip, "X-Request-ID": request_id})
    assert decided.status_code == 303


async def test_consent_given_and_withdrawn_with_the_grants_the_token_service_revokes(
        alice: User, mallory: User, pages: Pages, pool: asyncpg.Pool) -> None:
    app = await register(mallory)
    await grant_tokens(alice, pages, app)
    rid, ip = fresh_request_id(), fresh_ip()
    await approve(alice, app.client_id, ip=ip, request_id=rid)
    (row,) = await of_request(pool, rid)
    uid = alice.person.user_id
    assert who(row) == ("consent.granted", "user", uid, uid, app.client_id, ip,
                        {"scope": "bookings:read"})

    rid, ip = fresh_request_id(), fresh_ip()
    await alice.page("/settings/authorized-apps")
    revoked = await alice.http.post(f"/settings/authorized-apps/{app.client_id}/revoke",
                                    data={"csrf_token": alice.csrf},
                                    headers={"X-Forwarded-For": ip, "X-Request-ID": rid})
    assert revoked.status_code == 303
    rows = await of_request(pool, rid)
    # The consent by the authorize service, the grant by the token service: one request id,
    # one user, one address, passed on over gRPC.
    assert sorted(who(row) for row in rows) == [
        ("consent.revoked", "user", uid, uid, app.client_id, ip, {}),
        ("grant.revoked", "user", uid, uid, app.client_id, ip, {"reason": "user_revoked_app"}),
    ]


async def test_an_apps_life_is_recorded_as_its_owners(alice: User, mallory: User,
                                                      pages: Pages, pool: asyncpg.Pool) -> None:
    uid = alice.person.user_id
    ip = fresh_ip()
    headers = {"X-Forwarded-For": ip}

    async def post(path: str, data: dict[str, Any], rid: str) -> httpx.Response:
        return await alice.http.post(path, data={"csrf_token": alice.csrf, **data},
                                     headers={**headers, "X-Request-ID": rid})

    registered, changed, rotated, deleted = (fresh_request_id() for _ in range(4))
    created = await post(f"{APPS}/new", {
        "name": "Audit Trail App", "description": "", "redirect_uris": CALLBACK,
        "scope": ["bookings:read"], "client_type": "confidential"}, registered)
    assert created.status_code == 303
    client_id = created.headers["location"].split("/")[-2]
    await grant_tokens(mallory, pages, Registered(client_id, await _secret_of(alice, client_id),
                                                  ""))
    assert (await post(f"{APPS}/{client_id}", {
        "name": "Audit Trail App 2", "description": "Now described.",
        "redirect_uris": CALLBACK, "scope": ["bookings:read"]}, changed)).status_code == 303
    assert (await post(f"{APPS}/{client_id}/rotate-secret", {"overlap": "none"},
                       rotated)).status_code == 303
    assert (await post(f"{APPS}/{client_id}/delete", {}, deleted)).status_code == 303

    def mine(event_type: str, details: dict[str, Any]) -> tuple[Any, ...]:
        return (event_type, "user", uid, uid, client_id, ip, details)

    assert [who(row) for row in await of_request(pool, registered)] == [
        mine("client.registered", {"client_type": "confidential"})]
    assert [who(row) for row in await of_request(pool, changed)] == [
        mine("client.updated", {"fields": ["allowed_scopes", "description", "name",
                                           "redirect_uris"]})]
    assert [who(row) for row in await of_request(pool, rotated)] == [
        mine("client.secret_rotated", {"overlap_seconds": 0})]
    on_delete = await of_request(pool, deleted)
    # Mallory's grant ends with the app: revoked by its owner, who deleted it.
    assert sorted(row[:3] + row[4:] for row in map(who, on_delete)) == [
        ("client.deleted", "user", uid, client_id, ip, {}),
        ("grant.revoked", "user", uid, client_id, ip, {"reason": "app_deleted"}),
    ]
    revoked = next(row for row in on_delete if row["event_type"] == "grant.revoked")
    assert revoked["subject_user_id"] == mallory.person.user_id


async def _secret_of(user: User, client_id: str) -> str:
    page = await user.page(f"{APPS}/{client_id}/credentials")
    match = re.search(r'<textarea id="client_secret"[^>]*>([^<]+)</textarea>', page.text)
    assert match
    return html.unescape(match.group(1))


_EVENT_ROWS = re.compile(r"<tbody>(.*?)</tbody>", re.S)


async def test_an_apps_page_shows_its_events_to_its_owner_and_only_to_her(
        alice: User, mallory: User, pages: Pages, pool: asyncpg.Pool) -> None:
    app = await register(alice, name="Watched App")
    # A user of the app: approves, then withdraws.
    await grant_tokens(mallory, pages, app)
    await mallory.page("/settings/authorized-apps")
    await mallory.http.post(f"/settings/authorized-apps/{app.client_id}/revoke",
                            data={"csrf_token": mallory.csrf},
                            headers={"X-Forwarded-For": "192.0.2.200"})
    ip = fresh_ip()
    await alice.http.post(f"{APPS}/{app.client_id}/rotate-secret",
                          data={"csrf_token": alice.csrf, "overlap": "default"},
                          headers={"X-Forwarded-For": ip})

    page = await alice.page(f"{APPS}/{app.client_id}")

    assert page.status_code == 200
    table = _EVENT_ROWS.search(page.text)
    assert table, page.text
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)
    text = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]
    # Newest first. The owner's own actions show her address; a user of the app stays a user.
    assert "Client secret rotated" in text[0] and "You" in text[0] and ip in text[0]
    assert "Access revoked" in text[1] and "A user" in text[1]
    assert "192.0.2.200" not in page.text and mallory.person.user_id not in page.text
    assert any("App registered" in row for row in text)
    assert not any("Token" in row and "issued" in row for row in text)

    # Mallory, signed in, gets exactly what an app that does not exist gets.
    theirs = await mallory.page(f"{APPS}/{app.client_id}")
    missing = await mallory.page(f"{APPS}/otesse_ci_{secrets.token_urlsafe(16)}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text == missing.text
    assert "Security events" not in theirs.text


async def test_metrics_count_what_the_authorize_service_writes(pages: Pages,
                                                               pool: asyncpg.Pool) -> None:
    person: Person = await new_person(pool)

    async def count() -> float:
        async with httpx.AsyncClient(base_url=pages.url) as http:
            text = (await http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith('otesse_audit_events_total{type="sign_in.failed"}'):
                return float(line.split()[-1])
        return 0.0

    before = await count()
    await sign_in_attempt(pages, person.email, "nope", ip=fresh_ip(),
                          request_id=fresh_request_id())
    assert await count() == before + 1
