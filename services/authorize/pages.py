"""HTML pages: the templates, and the one place where errors become pages or redirects.

Before the client and redirect URI are trusted an error is a page (400); after, it is a
redirect to the client (RFC 6749 §4.1.2.1). A store or the registry being down is a 503 page
with ``Retry-After``; anything unexpected is a plain 500 page, its story in the log only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from services.authorize.authorization_response import AuthorizationErrorRedirect, error_location
from services.authorize.components import components
from services.authorize.csrf import CsrfFailure
from services.authorize.security_headers import content_security_policy
from services.common.errors import OAuthError, TemporarilyUnavailable
from services.common.http import NO_STORE, classify
from services.common.unavailable import DEPENDENCY_FAILURES

log = logging.getLogger("otesse.authorize")

_CSS = resources.files("services.authorize") / "static" / "otesse.css"
CSS_URL = "/static/otesse.css?v=" + hashlib.sha256(_CSS.read_bytes()).hexdigest()[:12]

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.PackageLoader("services.authorize", "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True))
templates.env.globals["css_url"] = CSS_URL

def page(request: Request, template: str, context: Mapping[str, Any], *, status: int = 200,
         form_targets: Sequence[str] = (), headers: Mapping[str, str] | None = None,
         ) -> Response:
    """A rendered page: never cached, never framed, forms only to ``form_targets``."""
    return templates.TemplateResponse(
        request, template, dict(context), status_code=status,
        headers={**NO_STORE, "Content-Security-Policy": content_security_policy(form_targets),
                 **(headers or {})})


# Which heading a user sees for each error; the description (ours, never the client's) follows.
_TITLES = {
    "invalid_request": "This link can't be used",
    "access_denied": "This page has expired",
    "temporarily_unavailable": "Otesse is temporarily unavailable",
    "server_error": "Something went wrong",
}


def _error_page(request: Request, error: OAuthError) -> Response:
    status = error.status_code
    headers = {"Retry-After": "5"} if isinstance(error, TemporarilyUnavailable) else {}
    title = _TITLES.get(error.error, "This request can't be completed")
    if isinstance(error, CsrfFailure):
        title = "This form has expired"
    description = error.description or "Please go back and try again."
    return page(request, "error.html", {"title": title, "description": description,
                                        "status": status}, status=status, headers=headers)


async def render_error(request: Request, exc: Exception) -> Response:
    """The page (or redirect) for any error; also what the request context answers for an
    unexpected one (a 500 page naming the request id)."""
    if isinstance(exc, AuthorizationErrorRedirect):
        location = error_location(exc, issuer=components(request).settings.issuer)
        # RFC 9700 §4.12: after a POST, redirect with 303 so the form is not re-sent.
        status = 303 if request.method == "POST" else 302
        return RedirectResponse(location, status_code=status, headers=NO_STORE)
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return page(request, "error.html", {
                "title": "Page not found", "status": 404,
                "description": "There is nothing at this address."}, status=404)
        if exc.status_code == 405:
            return page(request, "error.html", {
                "title": "This request can't be completed", "status": 405,
                "description": "This page can't be used that way."}, status=405,
                headers=exc.headers)
        return page(request, "error.html", {
            "title": "This request can't be completed", "status": exc.status_code,
            "description": "Please go back and try again."}, status=exc.status_code)
    return _error_page(request, classify(exc))


# Starlette picks a handler by the exception's class; the stores' and peers' failures are
# listed so that an outage is a 503 page (and not re-raised as a crash). Anything else is a bug:
# RequestContextMiddleware logs it with the request id and answers with render_error.
_HANDLED: tuple[type[BaseException], ...] = (
    AuthorizationErrorRedirect, OAuthError, HTTPException, *DEPENDENCY_FAILURES)


def html_error_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    return dict.fromkeys(_HANDLED, render_error)
