"""CSRF protection of every form (RFC 6749 §10.12; OWASP "Synchronizer token pattern").

Each session carries a random token; a form is accepted only when it sends back the token of
the session its cookie names. A token copied from another session, a missing token and a
missing session all fail alike.
"""

from __future__ import annotations

import hmac

from services.authorize.sessions import Session
from services.common.errors import AccessDenied


class CsrfFailure(AccessDenied):
    """The form did not come from a page this server showed in this session."""


EXPIRED = "This form has expired. Go back, reload the page and try again."


def check(session: Session | None, presented: object) -> Session:
    # RFC 6749 §10.12: the client "MUST implement CSRF protection"; our own forms do the same,
    # comparing in constant time.
    if session is None or not isinstance(presented, str) or not hmac.compare_digest(
            session.csrf_token.encode(), presented.encode("utf-8", "replace")):
        raise CsrfFailure(EXPIRED)
    return session
