"""Signing in and out with email and password (NIST SP 800-63B §5.1.1, §5.2.2; OWASP
Authentication and Session Management cheat sheets).

* A new session id at every sign-in (session fixation).
* The same message, and the same work (a dummy Argon2 verification), for an unknown email as
  for a wrong password, so neither the answer nor its timing tells which emails exist.
* Failed attempts slow down, then lock (:mod:`login_throttle`): per IP, per account from that
  IP and per account from unknown devices — or, from a browser the owner signed in from before
  (its device cookie, :mod:`devices`), per that device only, so that guessing from elsewhere
  never locks the owner out. Every successful sign-in leaves such a cookie.
* After sign-in only a same-origin relative ``next`` is followed (RFC 9700 §4.11, open
  redirectors).
* Every attempt that is judged is in the audit trail: ``sign_in.succeeded`` (by the user),
  ``sign_in.failed`` and ``sign_in.locked`` (by an anonymous visitor, about the account when
  the email is a user's). Nothing typed is kept, in any form: not the email (it may be a
  password typed in the wrong field), nor a hash of it (an unkeyed hash of a guessable value
  gives it back). An unknown email and a known one cost the same one INSERT, and the page
  shows nothing of it.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.authorize import csrf, devices, passwords, session_cookie
from services.authorize.components import Components, components
from services.authorize.login_throttle import Attempt
from services.authorize.origins import csp_origin
from services.authorize.pages import page
from services.authorize.sessions import Session
from services.authorize.signed_in import signed_in
from services.common import audit, client_ip
from services.common.http import NO_STORE

AUTHORIZE_PATH = "/oauth/authorize"
MAX_NEXT_LENGTH = 8192
MAX_EMAIL_LENGTH = 254
WRONG_CREDENTIALS = "Incorrect email or password."
EXPIRED_FORM = "This sign-in form expired. Please try again."


def safe_next(value: object) -> str | None:
    """``value`` when it is a path on this site (``/…``), else ``None``.

    Refused: anything with a scheme or host, protocol-relative ``//host``, ``/\\host`` (which
    browsers read as ``//host``), and any control character or whitespace.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NEXT_LENGTH:
        return None
    if not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return None
    if any(unicodedata.category(ch).startswith(("C", "Z")) for ch in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def after_sign_in(next_target: str | None) -> str:
    """Where a successful sign-in goes: ``next``, minus ``prompt=login`` when it is an
    authorization request — the sign-in that request asked for has just happened."""
    if next_target is None:
        return "/"
    parts = urlsplit(next_target)
    if parts.path != AUTHORIZE_PATH:
        return next_target
    pairs = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prompt":
            value = " ".join(p for p in value.split() if p != "login")
            if not value:
                continue
        pairs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(pairs)))


async def _app_for(c: Components, next_target: str | None) -> tuple[str | None, list[str]]:
    """The app a sign-in continues to, and the origin its form may end at.

    After signing in, the browser may go straight on to the app's redirect URI; browsers hold
    that redirect to the login form's CSP ``form-action``, so its origin is listed — but only
    when it is registered for that app.
    """
    if next_target is None:
        return None, []
    parts = urlsplit(next_target)
    if parts.path != AUTHORIZE_PATH:
        return None, []
    params = dict(parse_qsl(parts.query))
    client_id, redirect_uri = params.get("client_id"), params.get("redirect_uri")
    if not client_id or not redirect_uri:
        return None, []
    client = await c.clients.get(client_id=client_id)
    if client is None or redirect_uri not in client.redirect_uris:
        return None, []
    origin = csp_origin(redirect_uri)
    return client.name, [origin] if origin else []


async def _login_page(request: Request, c: Components, *, session_id: str, session: Session,
                      new_session: bool, next_target: str | None, email: str = "",
                      message: str | None = None, status: int = 200) -> Response:
    app_name, form_targets = await _app_for(c, next_target)
    response = page(request, "login.html", {
        "csrf_token": session.csrf_token, "next": next_target or "", "email": email,
        "message": message, "app_name": app_name, "signed_in_as": session.email,
        "issuer_host": urlsplit(c.settings.issuer).netloc,
    }, status=status, form_targets=form_targets)
    if new_session:
        session_cookie.set_cookie(response, session_id, c.settings)
    return response


async def login_form(request: Request) -> Response:
    c = components(request)
    session_id, session, new = await session_cookie.current_or_new(request, c)
    return await _login_page(request, c, session_id=session_id, session=session,
                             new_session=new, next_target=safe_next(
                                 request.query_params.get("next")))


async def login(request: Request) -> Response:
    c = components(request)
    form = await request.form(max_files=0, max_fields=10)
    next_target = safe_next(form.get("next"))
    raw_email, raw_password = form.get("email"), form.get("password")
    email = raw_email.strip()[:MAX_EMAIL_LENGTH] if isinstance(raw_email, str) else ""
    password = raw_password if isinstance(raw_password, str) else ""
    found = await session_cookie.current(request, c)
    try:
        if found is None:
            raise csrf.CsrfFailure(csrf.EXPIRED)
        csrf.check(found.session, form.get("csrf_token"))
    except csrf.CsrfFailure:
        session_id, session = await c.sessions.create()
        return await _login_page(request, c, session_id=session_id, session=session,
                                 new_session=True, next_target=next_target, email=email,
                                 message=EXPIRED_FORM, status=403)
    old_id, old_session = found

    async def again(message: str, status: int) -> Response:
        return await _login_page(request, c, session_id=old_id, session=old_session,
                                 new_session=False, next_target=next_target, email=email,
                                 message=message, status=status)

    ip = client_ip.of_request(request, c.settings.trusted_proxies)
    origin = audit.Origin.of(ip)
    device_id = devices.from_request(request, c.settings)
    # Looked up whatever the email, so that the answer's timing says nothing about it.
    device_owner = await c.devices.user_of(device_id=device_id) if device_id else None
    user = await c.users.by_email(email=email) if email else None
    known_device = device_id if (user is not None and device_owner == user.user_id) else None
    attempt = Attempt(email=email, ip=ip, known_device=known_device)
    verdict = await c.throttle.check(attempt)
    device = "known" if known_device else "new"
    if verdict.locked_for:
        await c.audit.record(audit.Event(
            type="sign_in.locked", actor=audit.Actor.anonymous(), origin=origin,
            subject_user_id=user.user_id if user else None,
            details={"device": device, "locked_for_seconds": verdict.locked_for}))
        minutes = max(1, -(-verdict.locked_for // 60))
        return await again(f"Too many failed sign-in attempts. Try again in {minutes} "
                           f"minute{'s' if minutes != 1 else ''}.", 429)
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    candidate = password[:passwords.MAX_LENGTH]
    if user is not None:
        verified = await asyncio.to_thread(passwords.verify, user.password_hash, candidate)
    else:
        # Same work as a real verification: an unknown email must not answer faster.
        await asyncio.to_thread(passwords.verify_dummy, candidate)
        verified = False
    verified = verified and len(password) <= passwords.MAX_LENGTH
    delayed = {"delayed_ms": int(verdict.delay * 1000)} if verdict.delay else {}
    if user is None or not verified or user.disabled:
        await c.throttle.failed(attempt)
        reason = ("unknown_account" if user is None else
                  "wrong_password" if not verified else "account_disabled")
        await c.audit.record(audit.Event(
            type="sign_in.failed", actor=audit.Actor.anonymous(), origin=origin,
            subject_user_id=user.user_id if user else None,
            details={"device": device, "reason": reason, **delayed}))
        return await again(WRONG_CREDENTIALS, 400)
    await c.throttle.succeeded(attempt)
    # OWASP: "renew the session ID after any privilege level change" — a session id the
    # browser held before signing in (perhaps planted by someone else) ends here.
    await c.sessions.delete(session_id=old_id)
    session_id, _ = await c.sessions.create(user_id=user.user_id, email=user.email,
                                            auth_time=time.time())
    # Recorded before the session is handed out: were this to fail, the browser would get an
    # error page and never the new session's id, so no sign-in goes unrecorded.
    await c.audit.record(audit.Event(
        type="sign_in.succeeded", actor=audit.Actor.user(user.user_id), origin=origin,
        subject_user_id=user.user_id, details={"device": device, **delayed}))
    response = RedirectResponse(after_sign_in(next_target), status_code=303, headers=NO_STORE)
    session_cookie.set_cookie(response, session_id, c.settings)
    if known_device is None:
        devices.set_cookie(response, await c.devices.create(user_id=user.user_id), c.settings)
    return response


async def logout(request: Request) -> Response:
    c = components(request)
    form = await request.form(max_files=0, max_fields=10)
    found = await session_cookie.current(request, c)
    if found is None:
        raise csrf.CsrfFailure(csrf.EXPIRED)
    csrf.check(found.session, form.get("csrf_token"))
    await c.sessions.delete(session_id=found.session_id)
    response = RedirectResponse("/login", status_code=303, headers=NO_STORE)
    session_cookie.clear_cookie(response, c.settings)
    return response


async def home(request: Request) -> Response:
    c = components(request)
    who = await signed_in(request, c)
    if who is None:
        return RedirectResponse("/login", status_code=303, headers=NO_STORE)
    nav = {"email": who.email, "csrf_token": who.session.csrf_token}
    return page(request, "home.html", {**nav, "account": nav})
