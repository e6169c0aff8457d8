"""The authorization endpoint (RFC 6749 §3.1, §4.1.1–§4.1.2) and the consent decision.

``GET /oauth/authorize`` checks the request, sends a signed-out user to the login page and
back, and then either issues a code at once (the user already approved these scopes) or shows
the consent screen. ``POST /oauth/authorize/decision`` receives Approve or Deny.
"""

from __future__ import annotations

import time
import zlib
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from otesse.auth.v1 import registry_pb2
from services.authorize import csrf
from services.authorize.authorization_request import (
    AuthorizationRequest,
    BadClientRequest,
    validate,
)
from services.authorize.authorization_response import (
    AuthorizationErrorRedirect,
    success_location,
)
from services.authorize.components import Components, components
from services.authorize.developer_apps import logo_url
from services.authorize.origins import csp_origin, display_host
from services.authorize.pages import page
from services.authorize.sessions import Session
from services.authorize.signed_in import SignedIn, signed_in
from services.common import audit, client_ip
from services.common import scopes as scope_catalogue
from services.common.errors import (
    AccessDenied,
    ConsentRequired,
    InvalidRequest,
    LoginRequired,
)
from services.common.http import NO_STORE

PATH = "/oauth/authorize"
DECISIONS = ("approve", "deny")


def login_redirect(next_target: str) -> Response:
    return RedirectResponse("/login?" + urlencode({"next": next_target}), status_code=302,
                            headers=NO_STORE)


async def _issue(c: Components, request: AuthorizationRequest, who: SignedIn,
                 status: int) -> Response:
    code = await c.codes.issue(
        client_id=request.client_id, redirect_uri=request.redirect_uri, user_id=who.user_id,
        scopes=request.scopes, code_challenge=request.code_challenge,
        code_challenge_method=request.code_challenge_method,
        auth_time=who.session.auth_time or time.time())
    location = success_location(redirect_uri=request.redirect_uri, code=code,
                                state=request.state, issuer=c.settings.issuer)
    return RedirectResponse(location, status_code=status, headers=NO_STORE)


async def authorize(request: Request) -> Response:
    # Starlette answers HEAD on every GET route; here GET has effects (a code is issued for a
    # user who already consented), so HEAD is refused rather than run.
    if request.method == "HEAD":
        raise HTTPException(405, headers={"Allow": "GET"})
    c = components(request)
    client, auth_request = await validate(request.query_params.multi_items(), clients=c.clients)

    def fail(error: LoginRequired | ConsentRequired) -> AuthorizationErrorRedirect:
        return AuthorizationErrorRedirect(error, redirect_uri=auth_request.redirect_uri,
                                          state=auth_request.state)

    here = f"{PATH}?{request.url.query}"
    # OpenID Connect Core §3.1.2.1: prompt=login — "The Authorization Server SHOULD prompt the
    # End-User for reauthentication." The way back is this very request, prompt=login and all,
    # which leads here again until a sign-in succeeds: only then does the sign-in drop
    # prompt=login from it (login.after_sign_in). A session already open is left alone — a
    # cross-site link must not sign anyone out — and replaced only by that fresh sign-in.
    if "login" in auth_request.prompt:
        return login_redirect(here)
    who = await signed_in(request, c, client_id=client.client_id)
    if who is None:
        # OpenID Connect Core §3.1.2.1: prompt=none — "The Authorization Server MUST NOT
        # display any authentication or consent user interface pages."
        if "none" in auth_request.prompt:
            raise fail(LoginRequired("The user is not signed in."))
        return login_redirect(here)
    if set(auth_request.scopes) <= who.granted and "consent" not in auth_request.prompt:
        return await _issue(c, auth_request, who, status=302)
    if "none" in auth_request.prompt:
        raise fail(ConsentRequired("The user has not approved these scopes for this app."))
    request_id = await c.pending.put(request=auth_request, session_key=who.session.key,
                                     user_id=who.user_id)
    return consent_page(request, client, auth_request, session=who.session, email=who.email,
                        request_id=request_id, switch_url="/login?" + urlencode({"next": here}))


def consent_page(request: Request, client: registry_pb2.Client,
                 auth_request: AuthorizationRequest, *, session: Session, email: str,
                 request_id: str, switch_url: str) -> Response:
    origin = csp_origin(auth_request.redirect_uri)
    return page(request, "consent.html", {
        "app_name": client.name,
        "app_description": client.description,
        "logo_url": logo_url(client.client_id, client.logo_sha256),
        "avatar_letter": (client.name[:1] or "?").upper(),
        "avatar_color": zlib.crc32(client.name.encode("utf-8")) % 8,
        "email": email,
        "switch_url": switch_url,
        "scopes": [{"name": scope, "sentence": scope_catalogue.CATALOGUE[scope]}
                   for scope in auth_request.scopes],
        "redirect_host": display_host(auth_request.redirect_uri),
        "request_id": request_id,
        "csrf_token": session.csrf_token,
    }, form_targets=[origin] if origin else [])


async def decide(request: Request) -> Response:
    c = components(request)
    form = await request.form(max_files=0, max_fields=10)
    # Only a signed-in user was shown the consent screen: a visitor's form is an expired one.
    who = await signed_in(request, c)
    if who is None:
        raise csrf.CsrfFailure(csrf.EXPIRED)
    csrf.check(who.session, form.get("csrf_token"))
    decision = form.get("decision")
    if decision not in DECISIONS:
        raise InvalidRequest("Choose Approve or Deny.")
    request_id = form.get("request_id")
    auth_request = None
    if isinstance(request_id, str):
        auth_request = await c.pending.take(request_id=request_id, session_key=who.session.key,
                                            user_id=who.user_id)
    if auth_request is None:
        raise InvalidRequest("This authorization request has expired or was already answered.")
    # The app may have been deleted, or this redirect URI removed, while the screen was open.
    client = await c.clients.get(client_id=auth_request.client_id)
    if client is None or auth_request.redirect_uri not in client.redirect_uris:
        raise BadClientRequest("The app that sent you here is no longer registered for this "
                               "return address.")
    if decision == "deny":
        # RFC 6749 §4.1.2.1: access_denied — "The resource owner or authorization server
        # denied the request."
        raise AuthorizationErrorRedirect(AccessDenied("The user denied the request."),
                                         redirect_uri=auth_request.redirect_uri,
                                         state=auth_request.state)
    await c.consents.grant(user_id=who.user_id, client_id=auth_request.client_id,
                           scopes=auth_request.scopes, origin=audit.Origin.of(
                               client_ip.of_request(request, c.settings.trusted_proxies)))
    # RFC 9700 §4.12: 303 after a POST, so the browser does not re-send the form.
    return await _issue(c, auth_request, who, status=303)
