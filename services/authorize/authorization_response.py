"""Where the browser goes back to the client (RFC 6749 §4.1.2, §4.1.2.1; RFC 9207 §2).

Success carries ``code``, ``state`` and ``iss``; an error carries ``error``,
``error_description``, ``state`` and ``iss``. A query already present in the registered
redirect URI is kept (RFC 6749 §3.1.2).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from services.common.errors import OAuthError

# RFC 6749 §4.1.2.1: error_description characters MUST NOT include characters outside the set
# %x20-21 / %x23-5B / %x5D-7E.
_NOT_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


class AuthorizationErrorRedirect(Exception):
    """An error the client must hear about: raised after the redirect URI is trusted."""

    def __init__(self, error: OAuthError, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


def _with_query(redirect_uri: str, params: list[tuple[str, str]]) -> str:
    # RFC 6749 §3.1.2: the redirect URI's query component "MUST be retained when adding
    # additional query parameters".
    separator = "&" if "?" in redirect_uri else "?"
    if redirect_uri.endswith(("?", "&")):
        separator = ""
    return redirect_uri + separator + urlencode(params)


def success_location(*, redirect_uri: str, code: str, state: str | None, issuer: str) -> str:
    params = [("code", code)]
    if state is not None:
        # RFC 6749 §4.1.2: state is REQUIRED in the response "if the "state" parameter was
        # present in the client authorization request".
        params.append(("state", state))
    # RFC 9207 §2: the iss parameter value is the issuer identifier of the server.
    params.append(("iss", issuer))
    return _with_query(redirect_uri, params)


def error_location(error: AuthorizationErrorRedirect, *, issuer: str) -> str:
    params: list[tuple[str, str]] = [("error", error.error.error)]
    description = _NOT_DESCRIPTION.sub("", error.error.description)
    if description:
        params.append(("error_description", description))
    if error.state is not None:
        params.append(("state", error.state))
    params.append(("iss", issuer))
    return _with_query(error.redirect_uri, params)
