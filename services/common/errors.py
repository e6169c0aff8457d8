"""OAuth 2.0 errors: one class per RFC error code, rendered in one place per transport.

Codes and sentences come from RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1 and
OpenID Connect Core §3.1.2.6 (``prompt=none``); ``too_many_requests`` names RFC 6585 §4's
status, for which OAuth has no code (the gateway answers its own limits with it too).
``description`` is what the client sees; debug detail belongs in logs, never here. Anything not
an :class:`OAuthError` is rendered as ``server_error`` with no detail.

:func:`json_error` writes the ``{"error", "error_description"}`` body, for every transport that
answers in JSON: the services' exception handlers, the resource kit's bearer checks, the
gateway's own answers and the connection refusals written before any request is parsed.
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

ErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
    "unsupported_token_type",
    "invalid_token",
    "insufficient_scope",
    "login_required",
    "consent_required",
    "interaction_required",
    "too_many_requests",
]


def json_error(error: str, description: str = "") -> bytes:
    """The RFC 6749 §5.2 body: ``error``, and ``error_description`` when there is one ("Human-
    readable ASCII [USASCII] text providing additional information", OPTIONAL)."""
    body = {"error": error, "error_description": description} if description else {
        "error": error}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class OAuthError(Exception):
    error: ClassVar[ErrorCode] = "server_error"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.error)
        self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class InvalidRequest(OAuthError):
    """The request is missing a required parameter, includes an invalid parameter value,
    includes a parameter more than once, or is otherwise malformed."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed (e.g., unknown client, no client authentication included,
    or unsupported authentication method)."""

    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    """The provided authorization grant (e.g., authorization code, resource owner credentials)
    or refresh token is invalid, expired, revoked, does not match the redirection URI used in
    the authorization request, or was issued to another client."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """The authenticated client is not authorized to use this authorization grant type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """The authorization grant type is not supported by the authorization server."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, malformed, or exceeds the scope granted by the
    resource owner."""

    error = "invalid_scope"


class AccessDenied(OAuthError):
    """The resource owner or authorization server denied the request."""

    error = "access_denied"
    status_code = 403


class UnsupportedResponseType(OAuthError):
    """The authorization server does not support obtaining an authorization code using this
    method."""

    error = "unsupported_response_type"


class ServerError(OAuthError):
    """The authorization server encountered an unexpected condition that prevented it from
    fulfilling the request."""

    error = "server_error"
    status_code = 500


class TemporarilyUnavailable(OAuthError):
    """The authorization server is currently unable to handle the request due to a temporary
    overloading or maintenance of the server. ``Retry-After`` says when to try again."""

    error = "temporarily_unavailable"
    status_code = 503

    def __init__(self, description: str = "", *, retry_after: int = 1) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class UnsupportedTokenType(OAuthError):
    """The authorization server does not support the revocation of the presented token type."""

    error = "unsupported_token_type"


class InvalidToken(OAuthError):
    """The access token provided is expired, revoked, malformed, or invalid for other
    reasons."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(OAuthError):
    """The request requires higher privileges than provided by the access token."""

    error = "insufficient_scope"
    status_code = 403


class LoginRequired(OAuthError):
    """The authorization server requires end-user authentication (``prompt=none``)."""

    error = "login_required"


class ConsentRequired(OAuthError):
    """The authorization server requires end-user consent (``prompt=none``)."""

    error = "consent_required"


class InteractionRequired(OAuthError):
    """The authorization server requires end-user interaction of some form to proceed."""

    error = "interaction_required"


class TooManyRequests(OAuthError):
    """The client has sent too many requests in a given amount of time; ``Retry-After`` says
    when to try again (RFC 6585 §4)."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, description: str = "", *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after
