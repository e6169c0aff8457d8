"""Settings > Integrations > OAuth Apps: a developer registers and manages their apps (RFC 6749
§2 client registration; RFC 7591 §2 metadata; DESIGN §4 "Developer settings").

* Only the owner sees or changes an app: every registry call carries the signed-in user as
  ``owner_user_id``, and another user's app id is a 404, the same as an id that never existed.
* Every POST carries the session's CSRF token (:mod:`account`).
* A new secret (at registration or rotation) is shown once, on a page reached by a redirect
  after the POST, from a one-time server-side record (:mod:`secret_reveal`); never in a URL.
* Deleting an app first revokes every grant and token it holds (``TokenService.RevokeGrant``),
  then deletes it from the registry, so nothing issued to it outlives it.
* An app's page shows its recent security events from the audit trail (:mod:`app_events`),
  read only once the app is known to be the signed-in user's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.authorize import account, app_events, app_form, dates
from services.authorize.account import Account
from services.authorize.components import components
from services.authorize.developer_apps import DeveloperApp, InvalidField
from services.authorize.pages import page
from services.authorize.secret_reveal import Reveal
from services.authorize.security_headers import content_security_policy
from services.common import scopes as scope_catalogue
from services.common.errors import InvalidRequest
from services.common.http import NO_STORE

BASE = "/settings/integrations/oauth-apps"
_JS = resources.files("services.authorize") / "static" / "copy.js"
COPY_JS_URL = "/static/copy.js?v=" + hashlib.sha256(_JS.read_bytes()).hexdigest()[:12]
# The credentials page alone runs a script (its copy buttons), and only our own file.
_CREDENTIALS_CSP = content_security_policy() + "; script-src 'self'"


def _page(request: Request, who: Account, template: str, context: Mapping[str, Any], *,
          status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return page(request, template, {**context, "account": who.nav(), "section": "oauth-apps"},
                status=status, headers=headers)


def _see_other(location: str) -> Response:
    # RFC 9700 §4.12: 303 after a POST, so reloading the next page does not re-send the form.
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


def _view(app: DeveloperApp) -> Mapping[str, Any]:
    return {
        "client_id": app.client_id, "name": app.name, "description": app.description,
        "redirect_uris": app.redirect_uris, "client_type": app.client_type,
        "logo_url": app.logo_url, "initial": (app.name[:1] or "?").upper(),
        "scopes": [{"name": s, "sentence": scope_catalogue.CATALOGUE.get(s, s)}
                   for s in app.scopes],
        "created": dates.day(app.created_at), "created_iso": dates.iso(app.created_at),
        "secret_issued": dates.moment(app.secret_issued_at),
        "url": f"{BASE}/{app.client_id}",
    }


async def _owned(request: Request, who: Account) -> DeveloperApp:
    found = await components(request).apps.get(owner=who.user_id,
                                               client_id=request.path_params["client_id"])
    if found is None:
        raise HTTPException(404)
    return found


async def list_apps(request: Request) -> Response:
    who = await account.signed_in_account(request)
    apps = await components(request).apps.list(owner=who.user_id)
    return _page(request, who, "oauth_apps.html", {"apps": [_view(app) for app in apps],
                                                   "new_url": f"{BASE}/new"})


async def new_form(request: Request) -> Response:
    who = await account.signed_in_account(request)
    return _page(request, who, "oauth_apps_new.html", app_form.AppForm().context())


async def register(request: Request) -> Response:
    submitted = await app_form.read(request)
    c = components(request)
    who = await account.form_author(request, submitted.get("csrf_token"))
    form = app_form.parse(submitted, with_type=True)
    if not form.errors:
        try:
            credentials = await c.apps.register(
                owner=who.user_id, details=form.details(),
                client_type="public" if form.client_type == "public" else "confidential",
                logo=submitted.logo, on_behalf=who.on_behalf())
        except InvalidField as problem:
            form.refused(problem)
        else:
            await c.reveals.put(session_id=who.session_id, session_key=who.session_key,
                                reveal=Reveal(client_id=credentials.client_id,
                                              client_secret=credentials.client_secret,
                                              reason="registered"))
            return _see_other(f"{BASE}/{credentials.client_id}/credentials")
    return _page(request, who, "oauth_apps_new.html", form.context(), status=400)


async def credentials(request: Request) -> Response:
    who = await account.signed_in_account(request)
    app = await _owned(request, who)
    reveal = await components(request).reveals.take(
        session_id=who.session_id, session_key=who.session_key, client_id=app.client_id)
    return _page(request, who, "oauth_apps_credentials.html", {
        "app": _view(app), "reveal": reveal, "copy_js_url": COPY_JS_URL,
        "previous_expires": dates.moment(reveal.previous_expires_at) if reveal else "",
    }, headers={"Content-Security-Policy": _CREDENTIALS_CSP})


def _edit_form(app: DeveloperApp) -> app_form.AppForm:
    return app_form.AppForm(name=app.name, description=app.description,
                            redirect_uris="\n".join(app.redirect_uris), scopes=app.scopes,
                            client_type=app.client_type)


async def _edit_page(request: Request, who: Account, app: DeveloperApp,
                     form: app_form.AppForm, *, status: int = 200, saved: bool = False,
                     ) -> Response:
    # ``app`` came from _owned: the registry has confirmed it is this user's.
    events = await components(request).events.of_client(client_id=app.client_id,
                                                        limit=app_events.LIMIT)
    return _page(request, who, "oauth_apps_edit.html", {
        **form.context(), "app": _view(app), "saved": saved,
        "events": app_events.view(events, owner=who.user_id)}, status=status)


async def show(request: Request) -> Response:
    who = await account.signed_in_account(request)
    app = await _owned(request, who)
    return await _edit_page(request, who, app, _edit_form(app),
                            saved=request.query_params.get("saved") == "1")


async def update(request: Request) -> Response:
    submitted = await app_form.read(request)
    c = components(request)
    who = await account.form_author(request, submitted.get("csrf_token"))
    app = await _owned(request, who)
    form = app_form.parse(submitted, with_type=False)
    form.client_type = app.client_type
    if not form.errors:
        try:
            updated = await c.apps.update(
                owner=who.user_id, client_id=app.client_id, details=form.details(),
                logo=submitted.logo, remove_logo=submitted.get("remove_logo") == "1",
                on_behalf=who.on_behalf())
        except InvalidField as problem:
            form.refused(problem)
        else:
            if updated is None:
                raise HTTPException(404)
            return _see_other(f"{BASE}/{app.client_id}?saved=1")
    return await _edit_page(request, who, app, form, status=400)


async def rotate_secret(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    c = components(request)
    who = await account.form_author(request, form.get("csrf_token"))
    app = await _owned(request, who)
    if app.client_type == "public":
        raise InvalidRequest("A public app has no secret to rotate.")
    overlap = form.get("overlap")
    if overlap not in ("default", "none"):
        raise InvalidRequest("Choose how long the current secret keeps working.")
    rotated = await c.apps.rotate_secret(owner=who.user_id, client_id=app.client_id,
                                         overlap_seconds=0 if overlap == "none" else None,
                                         on_behalf=who.on_behalf())
    if rotated is None:
        raise HTTPException(404)
    await c.reveals.put(session_id=who.session_id, session_key=who.session_key,
                        reveal=Reveal(client_id=app.client_id,
                                      client_secret=rotated.client_secret, reason="rotated",
                                      previous_expires_at=rotated.previous_expires_at))
    return _see_other(f"{BASE}/{app.client_id}/credentials")


async def confirm_delete(request: Request) -> Response:
    who = await account.signed_in_account(request)
    app = await _owned(request, who)
    return _page(request, who, "oauth_apps_delete.html", {"app": _view(app)})


async def delete(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    c = components(request)
    who = await account.form_author(request, form.get("csrf_token"))
    app = await _owned(request, who)
    # Grants first: were the app deleted first and this call then failed, its tokens would
    # outlive it with no page left to revoke them from. Retrying is safe (both idempotent).
    await c.grants.revoke_client(client_id=app.client_id, on_behalf=who.on_behalf())
    if not await c.apps.delete(owner=who.user_id, client_id=app.client_id,
                               on_behalf=who.on_behalf()):
        raise HTTPException(404)
    return _see_other(f"{BASE}?deleted=1")
