"""The authorize service served for real (uvicorn on loopback) against this run's Postgres,
Redis and registry, plus helpers that drive it like a browser would."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import cast
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.authorize import passwords
from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings, LoginThrottleSettings
from services.authorize.users import PgUserStore
from services.common.settings import Env, StoreSettings
from tests.images import image_bytes
from tests.servers import serve_app

ISSUER = "http://localhost:8000"
REDIRECT_URI = "https://app.example.com/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1:8765/cb?source=otesse"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')


@pytest.fixture(scope="session")
def authorize_settings(store_settings: StoreSettings, registry_address: str,
                       ) -> AuthorizeSettings:
    return replace(
        AuthorizeSettings.from_env(Env({})), stores=store_settings,
        registry_addr=registry_address, issuer=ISSUER, client_cache_seconds=0.3,
        login=LoginThrottleSettings(slowdown_after=3, slowdown_seconds=0.05,
                                    slowdown_max_seconds=0.2, account_lock_after=5,
                                    ip_lock_after=12, lock_seconds=60, account_ip_lock_after=3,
                                    device_lock_after=4, device_seconds=3600))


@pytest_asyncio.fixture(scope="session")
async def authorize_url(authorize_settings: AuthorizeSettings) -> AsyncIterator[str]:
    async with serve_app(create_app(authorize_settings)) as url:
        yield url


@pytest_asyncio.fixture
async def browser(authorize_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping HTTP client that does not follow redirects, like a careful browser."""
    async with httpx.AsyncClient(base_url=authorize_url, follow_redirects=False,
                                 timeout=10.0) as client:
        yield client


@dataclass(frozen=True)
class App:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    public: bool


async def register(registry: registry_pb2_grpc.ClientRegistryStub, *, name: str,
                   redirect_uris: Sequence[str], scopes: Sequence[str], public: bool = False,
                   logo: bytes | None = None, description: str = "") -> App:
    stub = cast("registry_pb2_grpc.ClientRegistryAsyncStub", registry)
    response = await stub.RegisterClient(registry_pb2.RegisterClientRequest(
        name=name, description=description, redirect_uris=list(redirect_uris),
        allowed_scopes=list(scopes), owner_user_id="owner-1",
        client_type=registry_pb2.CLIENT_TYPE_PUBLIC if public
        else registry_pb2.CLIENT_TYPE_CONFIDENTIAL,
        logo=registry_pb2.Logo(data=logo) if logo else None))
    return App(response.client.client_id, name, tuple(redirect_uris), public)


@pytest_asyncio.fixture(scope="session")
async def app(registry: registry_pb2_grpc.ClientRegistryStub) -> App:
    """A confidential app with a logo, two redirect URIs and three scopes."""
    return await register(
        registry, name="Bookings Pro", redirect_uris=[REDIRECT_URI, LOOPBACK_REDIRECT],
        scopes=["bookings:read", "bookings:write", "customers:read"], logo=image_bytes(),
        description="Keeps your calendar in sync with your Otesse bookings.")


@pytest_asyncio.fixture(scope="session")
async def public_app(registry: registry_pb2_grpc.ClientRegistryStub) -> App:
    return await register(registry, name="Pocket Planner", redirect_uris=[REDIRECT_URI],
                          scopes=["bookings:read"], public=True)


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    password: str


_HASH = passwords.hash_password(PASSWORD)


async def new_person(pool: asyncpg.Pool) -> Person:
    email = f"user-{secrets.token_hex(5)}@example.com"
    user = await PgUserStore(pool).create(email=email, password_hash=_HASH)
    return Person(user.user_id, email, PASSWORD)


@pytest_asyncio.fixture
async def person(pool: asyncpg.Pool) -> Person:
    return await new_person(pool)


def csrf_token(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no csrf_token in the page"
    return html.unescape(match.group(1))


def request_id(page: str) -> str:
    match = _REQUEST_ID.search(page)
    assert match, "no request_id in the page"
    return html.unescape(match.group(1))


def fresh_ip() -> str:
    """A client address of its own (via X-Forwarded-For from loopback, a trusted proxy), so
    per-IP failure counters of one test never touch another's."""
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


async def sign_in(browser: httpx.AsyncClient, person: Person, *, next_target: str = "",
                  ip: str | None = None) -> httpx.Response:
    form_page = await browser.get("/login", params={"next": next_target} if next_target else {})
    assert form_page.status_code == 200
    response = await browser.post("/login", data={
        "email": person.email, "password": person.password,
        "csrf_token": csrf_token(form_page.text), "next": next_target,
    }, headers={"X-Forwarded-For": ip or fresh_ip()})
    assert response.status_code == 303, response.text
    return response


def authorize_params(app: App, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "client_id": app.client_id, "redirect_uri": app.redirect_uris[0],
        "response_type": "code", "scope": "bookings:read customers:read",
        "state": "xyz-state",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def query(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)
