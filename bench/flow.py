"""The steps of the documented flow, one request each, as the benchmark drives them.

Each step checks the answer as a client would (status, the documented fields, the ``state``
echoed back) and raises :class:`bench.load.StepFailed` when it is wrong, so a benchmark never
counts a fast failure as a success. The same functions drive the smoke test.

* Signing in and approving once: ``GET /login`` → hidden ``csrf_token`` → ``POST /login``
  (``email``, ``password``), then the consent form (hidden ``csrf_token`` and ``request_id``,
  ``decision=approve``) posted to ``/oauth/authorize/decision`` (DESIGN §4).
* Authorize (RFC 6749 §4.1.1–4.1.2): a signed-in user who already approved is redirected
  straight back with a code.
* Exchange and refresh (RFC 6749 §4.1.3, §6) with the documented JSON bodies.
* Validation: ``TokenService.ValidateToken`` over gRPC, as internal services do.
* An API call: ``GET /v1/bookings`` on the bookings API with the access token (RFC 6750).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from urllib.parse import unquote_plus

import httpx

from bench.http1 import Client, Response
from bench.load import StepFailed
from otesse.auth.v1 import token_pb2, token_pb2_grpc

_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[a-z_]+)" value="(?P<value>[^"]*)"')


@dataclass(frozen=True)
class Person:
    email: str
    password: str


@dataclass(frozen=True)
class App:
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of an HTML form, unescaped."""
    return {m["name"]: html.unescape(m["value"]) for m in _HIDDEN.finditer(page)}


def _expect(response: httpx.Response | Response, *statuses: int) -> None:
    if isinstance(response, httpx.Response):
        status, method, path = (response.status_code, response.request.method,
                                response.request.url.path)
    else:
        status, method, path = response.status, response.method, response.path
    if status not in statuses:
        detail = response.text[:160].replace("\n", " ")
        raise StepFailed(f"{method} {path} answered {status}, not "
                         f"{'/'.join(map(str, statuses))}: {detail}")


def authorize_params(app: App, state: str) -> dict[str, str]:
    """The documented authorization request (step 2)."""
    return {"client_id": app.client_id, "redirect_uri": app.redirect_uri,
            "response_type": "code", "scope": app.scope, "state": state}


def pkce_params(verifier: str) -> dict[str, str]:
    """The PKCE parameters of an authorization request (RFC 7636 §4.2, ``S256``)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return {"code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
            "code_challenge_method": "S256"}


def code_from(response: httpx.Response | Response, app: App, state: str) -> str:
    """The code of an authorization response (RFC 6749 §4.1.2): a redirect to the app's
    redirect URI carrying the request's ``state``."""
    _expect(response, 302, 303)
    location = response.headers.get("location", "")
    prefix = app.redirect_uri + "?"
    if not location.startswith(prefix):
        raise StepFailed(f"redirected to {location[:80]!r}, not the app's redirect URI")
    # parse_qs(urlsplit(…)) without their generality: this runs once per authorization the
    # load generator measures, on the cores the servers use. The fragment is never there
    # (the redirect URI has none, and a server adds none to a query-mode response).
    query: dict[str, list[str]] = {}
    for field in location[len(prefix):].split("&"):
        name, _, value = field.partition("=")
        query.setdefault(unquote_plus(name), []).append(unquote_plus(value))
    if query.get("state") != [state]:
        raise StepFailed("the redirect did not carry the request's state")
    codes = query.get("code")
    if not codes:
        raise StepFailed(f"no code in the redirect: {query.get('error')}")
    return str(codes[0])


async def sign_in_and_consent(browser: httpx.AsyncClient, *, person: Person, app: App) -> None:
    """Signs ``person`` in through the login form and approves ``app``'s scopes once; the
    session cookie stays in ``browser`` for the authorizations that follow."""
    state = secrets.token_urlsafe(12)
    first = await browser.get("/oauth/authorize", params=authorize_params(app, state))
    _expect(first, 302, 303)
    login_page = await browser.get(first.headers["location"])
    _expect(login_page, 200)
    form = hidden_fields(login_page.text)
    if "csrf_token" not in form:
        raise StepFailed("the login page has no csrf_token field")
    signed_in = await browser.post("/login", data={
        "csrf_token": form["csrf_token"], "next": form.get("next", ""),
        "email": person.email, "password": person.password})
    _expect(signed_in, 302, 303)
    back = await browser.get(signed_in.headers["location"])
    if back.status_code in (302, 303):
        code_from(back, app, state)  # approved before (a reused database)
        return
    _expect(back, 200)
    consent = hidden_fields(back.text)
    if "csrf_token" not in consent or "request_id" not in consent:
        raise StepFailed("the consent page has no csrf_token/request_id fields")
    decided = await browser.post("/oauth/authorize/decision", data={
        "csrf_token": consent["csrf_token"], "request_id": consent["request_id"],
        "decision": "approve"})
    code_from(decided, app, state)


def session_cookie(browser: httpx.AsyncClient) -> dict[str, str]:
    """The ``Cookie`` header that carries ``browser``'s session to another client."""
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)}


async def authorize(browser: Client, app: App) -> str:
    """``GET /oauth/authorize`` for a user who already approved: the code it redirects with.
    ``browser`` sends the signed-in session's cookie (:func:`session_cookie`)."""
    state = secrets.token_urlsafe(12)
    response = await browser.get("/oauth/authorize", params=authorize_params(app, state))
    return code_from(response, app, state)


def _tokens(response: Response) -> Tokens:
    _expect(response, 200)
    body = response.json()
    access, refresh = body.get("access_token", ""), body.get("refresh_token", "")
    if (not access.startswith("otesse_at_") or not refresh.startswith("otesse_rt_")
            or body.get("token_type") != "Bearer"):
        raise StepFailed(f"not the documented token response: keys {sorted(body)}")
    return Tokens(access, refresh)


async def exchange(api: Client, app: App, code: str) -> Tokens:
    """Step 4: the code for an access and a refresh token (the documented JSON body)."""
    return _tokens(await api.post_json("/oauth/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "client_id": app.client_id, "client_secret": app.client_secret}))


async def refresh(api: Client, app: App, refresh_token: str) -> Tokens:
    """Token Refresh: the next pair; ``refresh_token`` is spent."""
    return _tokens(await api.post_json("/oauth/token", {
        "grant_type": "refresh_token", "refresh_token": refresh_token,
        "client_id": app.client_id, "client_secret": app.client_secret}))


async def validate(stub: token_pb2_grpc.TokenServiceAsyncStub, access_token: str,
                   scopes: list[str]) -> None:
    """``TokenService.ValidateToken``: the token is active and holds ``scopes``."""
    answer = await stub.ValidateToken(token_pb2.ValidateTokenRequest(
        token=access_token, required_scopes=scopes), timeout=5.0)
    if not answer.active:
        reason = token_pb2.ValidationReason.Name(answer.reason)
        raise StepFailed(f"ValidateToken: inactive ({reason})")


async def list_bookings(api: Client, access_token: str) -> None:
    """Step 5: ``GET /v1/bookings`` with the access token."""
    response = await api.get("/v1/bookings", headers={"Authorization": f"Bearer {access_token}"})
    _expect(response, 200)
    if "data" not in response.json():
        raise StepFailed("GET /v1/bookings answered without data")
