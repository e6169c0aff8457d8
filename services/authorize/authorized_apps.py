"""Settings > Authorized apps: every app holding access for the signed-in user, and revoking it
(RFC 6749 §10.1 on the resource owner's control; RFC 7009 §2.1: revoking ends every token of
the grant).

An app holds access through a remembered consent (it can get a new code without asking) and
through live grants (refresh and access tokens). The page lists the union; **Revoke** removes
both: the consent row here, and every grant of this user for that app through
``TokenService.RevokeGrant``, whose deny-list makes the app's access tokens inactive at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.authorize import account, dates
from services.authorize.components import components
from services.authorize.developer_apps import well_formed_client_id
from services.authorize.pages import page
from services.common import scopes as scope_catalogue
from services.common.errors import InvalidRequest
from services.common.http import NO_STORE

PATH = "/settings/authorized-apps"


@dataclass
class _Access:
    client_id: str
    scopes: set[str] = field(default_factory=set)
    first: datetime | None = None
    last_used: datetime | None = None

    def saw(self, *, scopes: tuple[str, ...], first: datetime | None,
            used: datetime | None) -> None:
        self.scopes.update(scopes)
        if first is not None and (self.first is None or first < self.first):
            self.first = first
        if used is not None and (self.last_used is None or used > self.last_used):
            self.last_used = used


async def list_access(request: Request) -> Response:
    who = await account.signed_in_account(request)
    c = components(request)
    access: dict[str, _Access] = {}
    for consent in await c.consents.list_for_user(user_id=who.user_id):
        access.setdefault(consent.client_id, _Access(consent.client_id)).saw(
            scopes=consent.scopes, first=consent.created_at, used=None)
    for grant in await c.grants.list(user_id=who.user_id):
        # Tokens were issued when the grant was made, so that is its first use.
        access.setdefault(grant.client_id, _Access(grant.client_id)).saw(
            scopes=grant.scopes, first=grant.created_at,
            used=max(filter(None, (grant.created_at, grant.last_used_at)), default=None))
    apps = await c.apps.names(client_ids=list(access))
    rows: list[Mapping[str, Any]] = []
    for entry in sorted(access.values(), key=lambda a: a.first.timestamp() if a.first else 0.0,
                        reverse=True):
        app = apps.get(entry.client_id)
        if app is None:
            continue  # deleted: its grants died with it
        rows.append({
            "client_id": app.client_id, "name": app.name, "logo_url": app.logo_url,
            "initial": (app.name[:1] or "?").upper(),
            "scopes": [{"name": s, "sentence": sentence}
                       for s, sentence in scope_catalogue.CATALOGUE.items()
                       if s in entry.scopes],
            "first": dates.day(entry.first), "first_iso": dates.iso(entry.first),
            "last_used": dates.moment(entry.last_used),
            "last_used_iso": dates.iso(entry.last_used),
        })
    return page(request, "authorized_apps.html", {
        "apps": rows, "account": who.nav(), "section": "authorized-apps",
        "revoked": request.query_params.get("revoked") == "1"})


async def revoke(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    c = components(request)
    who = await account.form_author(request, form.get("csrf_token"))
    client_id = request.path_params["client_id"]
    if not well_formed_client_id(client_id):
        raise InvalidRequest("There is no such app.")
    # The consent first, so the app cannot silently get a new code while its grants are
    # being revoked; then every grant (and so every token) this user gave it.
    await c.consents.revoke(user_id=who.user_id, client_id=client_id, origin=who.origin)
    await c.grants.revoke(user_id=who.user_id, client_id=client_id, on_behalf=who.on_behalf())
    # RFC 9700 §4.12: 303 after a POST.
    return RedirectResponse(f"{PATH}?revoked=1", status_code=303, headers=NO_STORE)
