"""The signed-in user of the settings pages, and the CSRF check of their forms
(RFC 6749 §10.12; OWASP Session Management and CSRF Prevention cheat sheets).

A page asks for :func:`signed_in_account` (the one check of :mod:`services.authorize.signed_in`,
shared with the consent screen); a visitor who is not signed in is sent to ``/login`` with a
relative ``next`` back to the page, raised as :class:`SignInRequired` and turned into the
redirect in one place (:func:`sign_in_redirect`). A form's POST asks for :func:`form_author`,
which also checks the form's CSRF token against the session's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.authorize import csrf
from services.authorize.components import Components, components
from services.authorize.signed_in import SignedIn, signed_in
from services.common import audit, client_ip
from services.common.http import NO_STORE


class SignInRequired(Exception):
    """The page needs a signed-in user; ``next`` is where to come back to."""

    def __init__(self, next_target: str) -> None:
        super().__init__("sign-in required")
        self.next_target = next_target


@dataclass(frozen=True)
class Account:
    """Who is signed in, as the settings pages need it."""

    session_id: str
    session_key: str
    user_id: str
    email: str
    csrf_token: str
    # Where this request came from, for the audit events of what the user changes.
    origin: audit.Origin

    def on_behalf(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata of a call made for this user (the callee records them as the actor)."""
        return audit.on_behalf(self.user_id, self.origin)

    def nav(self) -> Mapping[str, Any]:
        """What the header's account menu shows (``base.html``)."""
        return {"email": self.email, "csrf_token": self.csrf_token}


def _come_back_to(request: Request) -> str:
    """The page to return to after signing in: this page, or after a POST the page the form
    was on (always a GET-able path on this site)."""
    path = request.url.path
    if request.method == "GET":
        return path + ("?" + request.url.query if request.url.query else "")
    if path.endswith(_ACTION_SUFFIXES):
        path = path.rsplit("/", 1)[0]
    return path


_ACTION_SUFFIXES = ("/rotate-secret", "/delete", "/revoke")


async def _account(request: Request, c: Components) -> SignedIn:
    who = await signed_in(request, c)
    if who is None:
        raise SignInRequired(_come_back_to(request))
    return who


def _as_account(request: Request, c: Components, who: SignedIn) -> Account:
    origin = audit.Origin.of(client_ip.of_request(request, c.settings.trusted_proxies))
    return Account(session_id=who.session_id, session_key=who.session.key,
                   user_id=who.user_id, email=who.email, csrf_token=who.session.csrf_token,
                   origin=origin)


async def signed_in_account(request: Request) -> Account:
    c = components(request)
    return _as_account(request, c, await _account(request, c))


async def form_author(request: Request, csrf_token: object) -> Account:
    """The signed-in user who sent a form from one of our pages: ``csrf_token`` (the form's
    field) must be the session's, else :class:`csrf.CsrfFailure`."""
    c = components(request)
    who = await _account(request, c)
    csrf.check(who.session, csrf_token)
    return _as_account(request, c, who)


async def sign_in_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    # RFC 9700 §4.12: 303 after a POST, so the form is not re-sent to the login page.
    status = 302 if request.method in ("GET", "HEAD") else 303
    return RedirectResponse("/login?" + urlencode({"next": exc.next_target}),
                            status_code=status, headers=NO_STORE)
