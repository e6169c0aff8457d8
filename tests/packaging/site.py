"""A person's visit to every page of the site through the gateway, checking what each page loads.

:class:`Visit` fetches pages with one cookie jar, and for each page every asset it references on
the gateway's origin (style sheets, scripts, images): each must answer 200 with the right
``Content-Type``. :func:`tour` signs in, registers an app with a logo on the OAuth Apps pages,
opens each settings page, authorizes the app on the consent screen, exchanges the code as the
documentation shows, and opens the error page: every template the authorize service has, and
every static file it serves. It is used against the wheel installed in a fresh environment and
against the containers.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from tests.images import image_bytes
from tests.integration.people import callback_params, hidden_inputs

APPS = "/settings/integrations/oauth-apps"
AUTHORIZED = "/settings/authorized-apps"
CALLBACK = "https://app.example.com/callback"
SCOPE = "bookings:read customers:read"
# What a page loads: <link rel="stylesheet" href>, <script src>, <img src>.
_ASSET = re.compile(r'<(?:link rel="stylesheet" href|script src|img [^>]*?src)="([^"]+)"')
_CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


@dataclass
class Visit:
    """A person at the gateway with a cookie jar, keeping what every fetch returned."""

    http: httpx.AsyncClient
    pages: dict[str, int] = field(default_factory=dict)
    assets: dict[str, bytes] = field(default_factory=dict)

    async def page(self, path: str, *, status: int = 200, **params: str) -> str:
        response = await self.http.get(path, params=params)
        assert response.status_code == status, (path, response.status_code, response.text[:500])
        assert response.headers["content-type"].startswith("text/html"), path
        self.pages[path] = status
        for reference in _ASSET.findall(response.text):
            await self.asset(html.unescape(reference))
        return response.text

    async def asset(self, reference: str) -> None:
        url = urljoin(str(self.http.base_url), reference)
        assert url.startswith(str(self.http.base_url)), f"an asset off the gateway: {url}"
        path = urlsplit(url).path
        if path in self.assets:
            return
        response = await self.http.get(url)
        assert response.status_code == 200, (url, response.status_code)
        content_type = response.headers["content-type"]
        suffix = path[path.rfind("."):] if path.startswith("/static/") else ""
        expected = _CONTENT_TYPES.get(suffix, "image/" if "/logo" in path else "")
        assert expected and content_type.startswith(expected), (url, content_type)
        self.assets[path] = response.content

    async def post(self, path: str, page: str, data: dict[str, str | Sequence[str]], *,
                   files: dict[str, tuple[str, bytes, str]] | None = None) -> httpx.Response:
        """Submits a form of ``page`` with its hidden inputs (CSRF token …) and ``data``."""
        return await self.http.post(path, data={**hidden_inputs(page), **data}, files=files)


@dataclass(frozen=True)
class Toured:
    client_id: str
    client_secret: str
    tokens: dict[str, object]


async def tour(visit: Visit, *, email: str, password: str) -> Toured:
    """Every page and asset, signed out and in, and one documented token exchange."""
    login = await visit.page("/login")
    response = await visit.post("/login", login, {"email": email, "password": password})
    assert response.status_code == 303, response.text[:500]
    await visit.page("/")

    listing = await visit.page(APPS)
    new = await visit.page(f"{APPS}/new")
    assert listing
    response = await visit.post(f"{APPS}/new", new, {
        "name": f"Tour {secrets.token_hex(3)}", "description": "Visits every page.",
        "redirect_uris": CALLBACK, "scope": SCOPE.split(), "client_type": "confidential"},
        files={"logo": ("logo.png", image_bytes(), "image/png")})
    assert response.status_code == 303, response.text[:500]
    credentials_path = response.headers["location"]
    client_id = credentials_path.split("/")[-2]
    credentials = await visit.page(credentials_path)
    secret = re.search(r'<textarea id="client_secret"[^>]*>([^<]+)</textarea>', credentials)
    assert secret, "the credentials page shows no secret"
    await visit.page(APPS)
    await visit.page(f"{APPS}/{client_id}")
    await visit.page(f"{APPS}/{client_id}/delete")

    consent = await visit.page("/oauth/authorize", client_id=client_id, redirect_uri=CALLBACK,
                               response_type="code", scope=SCOPE, state="tour")
    response = await visit.post("/oauth/authorize/decision", consent, {"decision": "approve"})
    assert response.status_code in (302, 303), response.text[:500]
    callback = response.headers["location"]
    assert callback.startswith(CALLBACK + "?"), callback
    # The exchange exactly as the developer documentation shows it (JSON body).
    exchanged = await visit.http.post("/oauth/token", json={
        "grant_type": "authorization_code", "code": callback_params(callback)["code"],
        "redirect_uri": CALLBACK, "client_id": client_id,
        "client_secret": html.unescape(secret.group(1))})
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == SCOPE
    await visit.page(AUTHORIZED)

    # An unknown client gets the error page, never a redirect.
    await visit.page("/oauth/authorize", status=400, client_id="otesse_ci_unknown",
                     redirect_uri=CALLBACK, response_type="code", scope=SCOPE)
    for document in ("/.well-known/oauth-authorization-server", "/.well-known/jwks.json"):
        response = await visit.http.get(document)
        assert response.status_code == 200, document
    return Toured(client_id, html.unescape(secret.group(1)), tokens)
