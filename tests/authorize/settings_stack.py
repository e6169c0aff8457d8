"""What the settings-page tests share: the authorize app wired to a real token service (its
gRPC ``TokenService`` for ListGrants/RevokeGrant, its HTTP token endpoint for exchanging codes),
signed-in browsers, and the form posts a person makes.

Its fixtures are in :mod:`tests.authorize.settings_fixtures`, a pytest plugin: test modules say
``pytest_plugins = ["tests.authorize.settings_fixtures"]``.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx

from tests.authorize.conftest import Person, csrf_token, fresh_ip, new_person
from tests.token.conftest import TokenService

APPS = "/settings/integrations/oauth-apps"
CALLBACK = "https://app.example.com/callback"
_APP_LINK = re.compile(r'href="/settings/integrations/oauth-apps/(otesse_ci_[A-Za-z0-9_-]+)"')
_SECRET = re.compile(r'<textarea id="client_secret"[^>]*>([^<]+)</textarea>')


@dataclass(frozen=True)
class Pages:
    """The authorize app under test, and the token service it talks to."""

    url: str
    token: TokenService


@dataclass
class User:
    """A person signed in, with their own cookie jar."""

    person: Person
    http: httpx.AsyncClient
    csrf: str = ""

    async def page(self, path: str) -> httpx.Response:
        response = await self.http.get(path)
        if response.status_code == 200 and 'name="csrf_token"' in response.text:
            self.csrf = csrf_token(response.text)
        return response

    async def post(self, path: str, data: dict[str, Any] | None = None, *,
                   files: dict[str, Any] | None = None, csrf: str | None = None,
                   ) -> httpx.Response:
        fields = {"csrf_token": self.csrf if csrf is None else csrf, **(data or {})}
        return await self.http.post(path, data=fields, files=files)


@asynccontextmanager
async def signed_in(pages: Pages, pool: asyncpg.Pool) -> AsyncIterator[User]:
    person = await new_person(pool)
    async with httpx.AsyncClient(base_url=pages.url, follow_redirects=False,
                                 timeout=10.0) as http:
        form = await http.get("/login")
        response = await http.post("/login", data={
            "email": person.email, "password": person.password,
            "csrf_token": csrf_token(form.text), "next": ""},
            headers={"X-Forwarded-For": fresh_ip()})
        assert response.status_code == 303, response.text
        user = User(person, http)
        await user.page(APPS)
        yield user


def app_form(*, name: str = "Calendar Sync", description: str = "Syncs bookings.",
             redirect_uris: str = CALLBACK, scopes: Sequence[str] = ("bookings:read",),
             client_type: str = "confidential") -> dict[str, Any]:
    return {"name": name, "description": description, "redirect_uris": redirect_uris,
            "scope": list(scopes), "client_type": client_type}


@dataclass(frozen=True)
class Registered:
    client_id: str
    client_secret: str
    credentials_page: str


async def register(user: User, *, logo: bytes | None = None, **fields: Any) -> Registered:
    """Register App as a person does: POST the form, follow to the credentials page."""
    files = {"logo": ("logo.png", logo, "image/png")} if logo is not None else None
    response = await user.post(f"{APPS}/new", app_form(**fields), files=files)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    client_id = location.split("/")[-2]
    shown = await user.page(location)
    assert shown.status_code == 200
    return Registered(client_id, shown_secret(shown.text), shown.text)


def shown_secret(page: str) -> str:
    """The client secret on a credentials page (empty when none is shown)."""
    match = _SECRET.search(page)
    return html.unescape(match.group(1)) if match else ""


def listed_app_ids(page: str) -> list[str]:
    return list(dict.fromkeys(_APP_LINK.findall(page)))


def field_error(page: str, field: str) -> str:
    """The text shown next to ``field`` (empty when there is none)."""
    match = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', page)
    return html.unescape(match.group(1)) if match else ""


def input_value(page: str, field: str) -> str:
    match = re.search(rf'<input id="{field}"[^>]*value="([^"]*)"', page)
    return html.unescape(match.group(1)) if match else ""


def textarea(page: str, field: str) -> str:
    match = re.search(rf'<textarea id="{field}"[^>]*>([^<]*)</textarea>', page, re.S)
    return html.unescape(match.group(1)) if match else ""


def code_of(location: str) -> str:
    query = parse_qs(urlsplit(location).query)
    assert "code" in query, location
    return query["code"][0]


async def grant_tokens(user: User, pages: Pages, app: Registered, *,
                       scope: str = "bookings:read") -> dict[str, Any]:
    """The whole flow for ``user`` and ``app``: authorize, approve, exchange the code."""
    params = {"client_id": app.client_id, "redirect_uri": CALLBACK, "response_type": "code",
              "scope": scope, "state": "s"}
    response = await user.http.get("/oauth/authorize", params=params)
    if response.status_code == 200:
        screen = response.text
        request_id = re.search(r'name="request_id" value="([^"]+)"', screen)
        assert request_id, screen
        response = await user.http.post("/oauth/authorize/decision", data={
            "csrf_token": csrf_token(screen), "request_id": html.unescape(request_id.group(1)),
            "decision": "approve"})
    assert response.status_code in (302, 303), response.text
    code = code_of(response.headers["location"])
    exchanged = await pages.token.http.post("/oauth/token", json={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
        "client_id": app.client_id, "client_secret": app.client_secret})
    assert exchanged.status_code == 200, exchanged.text
    body: dict[str, Any] = exchanged.json()
    return body
