"""Who is signed in: the one check every page that acts for a user makes.

A request is signed in when its cookie names a live session with a user in it, and that user
still exists and is not disabled. A user disabled (or removed) since signing in loses the
session at the next request of any page — the authorization endpoint, the consent decision,
the settings pages alike — and is a visitor again. The user's account is read with the
consents already given to the client at hand, in one query (``ConsentStore.standing``), so the
authorization endpoint's hot path costs one Postgres round trip, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from services.authorize import session_cookie
from services.authorize.components import Components
from services.authorize.sessions import Session


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user and their session."""

    session_id: str
    session: Session
    user_id: str
    # The account's address now (it may have changed since the sign-in).
    email: str
    # Scopes this user already approved for the client asked about; empty without one.
    granted: frozenset[str]


async def signed_in(request: Request, c: Components, *, client_id: str = "",
                    ) -> SignedIn | None:
    """The signed-in user, or ``None`` for a visitor (no session, or nobody in it, or a user
    whose account is gone or disabled: that session is deleted). ``client_id`` also reads the
    scopes the user approved for that client."""
    found = await session_cookie.current(request, c)
    if found is None:
        return None
    session_id, session = found
    user_id = session.user_id
    if user_id is None:
        return None
    standing = await c.consents.standing(user_id=user_id, client_id=client_id)
    if standing is None or standing.disabled:
        await c.sessions.delete(session_id=session_id)
        return None
    return SignedIn(session_id=session_id, session=session, user_id=user_id,
                    email=standing.email, granted=standing.granted)
