"""Protecting starlette endpoints with bearer tokens (RFC 6750).

``@requires_scopes("bookings:read")`` reads ``Authorization: Bearer …`` (RFC 6750 §2.1; the
form-body and query methods are not accepted), validates it with ``app.state.token_validator``
and answers per RFC 6750 §3: no credentials → 401 with a bare ``WWW-Authenticate: Bearer``
challenge; a malformed header → 400 ``invalid_request``; a bad, expired or revoked token → 401
``invalid_token``; a missing scope → 403 ``insufficient_scope`` naming the scope needed. When
the token cannot be checked at all the answer is 503, not 401: the token may be fine.
On success ``request.state.token`` is the :class:`ValidatedToken`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from services.common.errors import json_error
from services.common.http import NO_STORE
from services.common.token_reasons import DESCRIPTIONS
from services.resource_kit.validation import TokenServiceUnavailable, TokenValidator

log = logging.getLogger("otesse.resource_kit")
Endpoint = Callable[[Request], Awaitable[Response]]
REALM = "otesse"
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9\-._~+/]+=*)$", re.IGNORECASE)
_MAX_HEADER = 4096


def _challenge(error: str | None = None, description: str | None = None,
               scope: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def _error(status: int, error: str | None, description: str, *, scope: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    """The answer and, on 401 and 403, the ``WWW-Authenticate`` challenge (RFC 6750 §3)."""
    if headers is None:
        headers = {"WWW-Authenticate": _challenge(error, description if error else None, scope)}
    return Response(json_error(error or "invalid_token", description), status_code=status,
                    media_type="application/json", headers={**headers, **NO_STORE})


def requires_scopes(*scopes: str) -> Callable[[Endpoint], Endpoint]:
    required = tuple(scopes)
    scope_text = " ".join(required)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            header = request.headers.getlist("authorization")
            if not header:
                # RFC 6750 §3.1: with no authentication information, no error code.
                response = _error(401, None, "An access token is required.")
                return response
            match = _BEARER.match(header[0]) if len(header) == 1 else None
            if match is None or len(header[0]) > _MAX_HEADER:
                return _error(400, "invalid_request",
                              "Send one header: Authorization: Bearer <access token>.")
            validator: TokenValidator = request.app.state.token_validator
            try:
                validation = await validator.validate(match.group(1),
                                                      required_scopes=required)
            except TokenServiceUnavailable as exc:
                log.warning("token check unavailable", extra={"error": str(exc)})
                return _error(503, "temporarily_unavailable",
                              "The access token cannot be checked right now; retry shortly.",
                              headers={"Retry-After": "1"})
            if validation.reason == "insufficient_scope":
                return _error(403, "insufficient_scope",
                              f"This call needs the scope {scope_text}.", scope=scope_text)
            if not validation.active:
                return _error(401, "invalid_token",
                              DESCRIPTIONS.get(validation.reason, "The access token is not "
                                                                   "valid."))
            request.state.token = validation.token
            return await endpoint(request)

        return guarded

    return decorate
