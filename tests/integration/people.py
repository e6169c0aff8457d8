"""The people and apps of the end-to-end tests, and a person's browser reduced to HTML forms.

:class:`FormBrowser` does what a person does at ``/oauth/authorize`` through the gateway: it
follows redirects on the gateway's origin, fills in the login form (``email``, ``password``),
presses Approve on the consent screen (``decision=approve``), always sending the hidden
``csrf_token`` / ``request_id`` / ``next`` inputs the page carries, and stops at the first
redirect that leaves the gateway: the app's callback.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import asyncpg
import httpx

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc
from services.authorize import passwords
from services.authorize.users import PgUserStore
from services.common.grpc_client import create_channel
from tests.callers import as_service

PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = passwords.hash_password(PASSWORD)
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    password: str


@dataclass(frozen=True)
class RegisteredApp:
    client_id: str
    # Empty for a public client.
    client_secret: str
    redirect_uri: str


async def new_person(pool: asyncpg.Pool) -> Person:
    email = f"e2e-{secrets.token_hex(5)}@example.com"
    user = await PgUserStore(pool).create(email=email, password_hash=_PASSWORD_HASH)
    return Person(user.user_id, email, PASSWORD)


async def register_app(registry_address: str, *, redirect_uri: str,
                       scopes: str = "bookings:read customers:read", public: bool = False,
                       name: str = "Acme Scheduler") -> RegisteredApp:
    """Registers an app with the stack's registry over gRPC, as the settings pages will."""
    channel = create_channel(registry_address, services=("otesse.auth.v1.ClientRegistry",),
                             interceptors=as_service("cli", "registry"))
    try:
        stub = registry_pb2_grpc.ClientRegistryStub(channel)
        response = await stub.RegisterClient(registry_pb2.RegisterClientRequest(
            name=name, description="Schedules your Otesse bookings.",
            redirect_uris=[redirect_uri], allowed_scopes=scopes.split(),
            owner_user_id="e2e-owner",
            client_type=registry_pb2.CLIENT_TYPE_PUBLIC if public
            else registry_pb2.CLIENT_TYPE_CONFIDENTIAL))
    finally:
        await channel.close()
    return RegisteredApp(response.client.client_id, response.client_secret, redirect_uri)


def hidden_inputs(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


def callback_params(url: str) -> dict[str, str]:
    """The query of a callback URL, one value per name (a repeated name fails the test)."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), url
    return {name: values[0] for name, values in parsed.items()}


class FormBrowser:
    """A person at the gateway with a cookie jar, driving the HTML forms."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.http = httpx.AsyncClient(base_url=gateway, follow_redirects=False, timeout=10.0)
        self.pages: list[str] = []

    async def __aenter__(self) -> FormBrowser:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    def _on_gateway(self, url: str) -> bool:
        return url.startswith(self.gateway + "/")

    async def authorize(self, authorization_url: str, person: Person, *,
                        decision: str = "approve") -> str:
        """Opens ``authorization_url``, signs in and decides when asked; returns the URL the
        browser is finally sent to off the gateway (the app's callback)."""
        response = await self.http.get(authorization_url)
        for _step in range(10):
            if response.status_code in _REDIRECTS:
                target = urljoin(str(response.url), response.headers["location"])
                if not self._on_gateway(target):
                    return target
                response = await self.http.get(target)
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            page = response.text
            self.pages.append(page)
            fields = hidden_inputs(page)
            if 'name="password"' in page:
                response = await self.http.post("/login", data={
                    **fields, "email": person.email, "password": person.password})
            elif 'name="decision"' in page:
                response = await self.http.post("/oauth/authorize/decision",
                                                data={**fields, "decision": decision})
            else:
                raise AssertionError(f"neither a login nor a consent page:\n{page[:800]}")
        raise AssertionError("too many steps before reaching the app's callback")
