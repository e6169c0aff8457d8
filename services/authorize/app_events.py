"""An app's recent security events as its owner sees them, on the app's settings page
(Settings > Integrations > OAuth Apps > the app), from the audit trail.

Only the owner sees them: the page shows them only after the registry confirmed the signed-in
user owns the app (another user gets the same 404 as for the app itself). What is shown is
what the owner may know: the time, the event in plain words, who did it, and from which
address — except that an end user of the app stays anonymous ("A user", no address) and an
operator's address is Otesse's own. Token issuance (every exchange and refresh) is left out:
the page is for what changed and what went wrong. Nothing here can hold a secret: the trail
holds none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.authorize import dates
from services.common.audit_search import StoredEvent

LIMIT = 25

_LABELS = {
    "client.registered": "App registered",
    "client.updated": "Details changed",
    "client.secret_rotated": "Client secret rotated",
    "client.deleted": "App deleted",
    "consent.granted": "Access approved",
    "consent.revoked": "Access removed",
    "grant.revoked": "Access revoked",
    "access_token.revoked": "Access token revoked",
    "code.replayed": "Authorization code used twice",
    "refresh_token.reused": "Used refresh token presented again",
}
_REASONS = {
    "user_revoked_app": "by the user, from Authorized apps",
    "app_deleted": "the app was deleted",
    "client_revoked_token": "your app revoked a refresh token",
    "operator": "by Otesse",
    "refresh_token_reuse": "a used refresh token came back",
    "code_replay": "an authorization code came back",
}
_FIELDS = {"name": "name", "description": "description", "redirect_uris": "redirect URIs",
           "allowed_scopes": "scopes", "logo": "logo"}


def _note(event: StoredEvent) -> str:
    details = event.details
    if event.type == "grant.revoked":
        return _REASONS.get(str(details.get("reason")), "")
    if event.type == "client.updated":
        fields = details.get("fields")
        if isinstance(fields, list):
            return ", ".join(_FIELDS.get(str(f), str(f)) for f in fields)
    if event.type == "client.secret_rotated":
        overlap = details.get("overlap_seconds")
        if overlap == 0:
            return "the previous secret stopped at once"
        if isinstance(overlap, int):
            return f"the previous secret kept for {max(1, overlap // 60)} minutes"
    if event.type == "consent.granted" and isinstance(details.get("scope"), str):
        return str(details["scope"])
    return ""


def _actor(event: StoredEvent, owner: str) -> tuple[str, bool]:
    """Who, in the owner's words, and whether their address may be shown."""
    if event.actor_kind == "user":
        if event.actor_id == owner:
            return "You", True
        return "A user", False
    if event.actor_kind == "client":
        return "Your app", True
    if event.actor_kind == "operator":
        return "Otesse", False
    return "Otesse, automatically", True


def view(events: Sequence[StoredEvent], *, owner: str) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]] = []
    for event in events:
        actor, show_ip = _actor(event, owner)
        rows.append({
            "when": dates.moment(event.occurred_at), "when_iso": dates.iso(event.occurred_at),
            "label": _LABELS.get(event.type, event.type), "note": _note(event),
            "alert": event.type in ("code.replayed", "refresh_token.reused"),
            "actor": actor, "ip": (event.client_ip or "—") if show_ip else "—",
        })
    return rows
