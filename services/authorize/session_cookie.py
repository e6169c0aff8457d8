"""The session cookie (RFC 6265bis §4.1; OWASP Session Management Cheat Sheet).

``HttpOnly`` (no script reads it), ``SameSite=Lax`` (not sent on cross-site POSTs), path
``/``, and ``Secure`` unless the issuer is plain http for local development; when secure the
name takes the ``__Host-`` prefix, which browsers only accept from a secure origin without a
``Domain``.
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from services.authorize.components import Components
from services.authorize.sessions import Session
from services.authorize.settings import AuthorizeSettings

_NAME = "otesse_session"


class LiveSession(NamedTuple):
    """The session a request's cookie names: its id (the cookie's value) and its record."""

    session_id: str
    session: Session


def cookie_name(settings: AuthorizeSettings) -> str:
    return f"__Host-{_NAME}" if settings.secure_cookies else _NAME


async def current(request: Request, c: Components) -> LiveSession | None:
    """The live session the request's cookie names."""
    session_id = request.cookies.get(cookie_name(c.settings))
    if not session_id:
        return None
    session = await c.sessions.get(session_id=session_id)
    return LiveSession(session_id, session) if session is not None else None


async def current_or_new(request: Request, c: Components) -> tuple[str, Session, bool]:
    """The live session, or a new anonymous one; the flag says whether it is new."""
    found = await current(request, c)
    if found is not None:
        return found.session_id, found.session, False
    session_id, session = await c.sessions.create()
    return session_id, session, True


def set_cookie(response: Response, session_id: str, settings: AuthorizeSettings) -> None:
    # Expiry is enforced server-side; the cookie itself lives for the browser session.
    response.set_cookie(cookie_name(settings), session_id, path="/", httponly=True,
                        samesite="lax", secure=settings.secure_cookies)


def clear_cookie(response: Response, settings: AuthorizeSettings) -> None:
    response.delete_cookie(cookie_name(settings), path="/", httponly=True, samesite="lax",
                           secure=settings.secure_cookies)
