"""Request parameters of the token, revocation and introspection endpoints.

RFC 6749 §3.2 (``application/x-www-form-urlencoded``) and, as the public documentation shows,
``application/json`` with string values. Anything else is ``invalid_request``, as are repeated
parameters and bodies over the size cap (413).
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.requests import Request

from services.common.errors import InvalidRequest

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class RequestTooLarge(InvalidRequest):
    """The request body exceeds the size this endpoint accepts."""

    status_code = 413


async def _body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise RequestTooLarge("The request body is too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestTooLarge("The request body is too large.")
        chunks.append(chunk)
    return b"".join(chunks)


def _unique(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once."
        if name in params:
            raise InvalidRequest(f"The {name} parameter is repeated.")
        # RFC 6749 Appendix A: every parameter of these endpoints is made of printable
        # characters; a control character (a NUL above all) is never part of a valid value.
        if not value.isprintable() or not name.isprintable():
            raise InvalidRequest(f"The {name!r} parameter holds a control character.")
        params[name] = value
    # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were omitted
    # from the request."
    return {name: value for name, value in params.items() if value != ""}


def _from_json(body: bytes) -> dict[str, str]:
    try:
        document = json.loads(body, object_pairs_hook=list)
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(document, list) or (document and not isinstance(document[0], tuple)):
        raise InvalidRequest("The request body must be a JSON object.")
    for name, value in document:
        if not isinstance(value, str):
            raise InvalidRequest(f"The {name} parameter must be a string.")
    return _unique(document)


def _from_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The request body is not valid form data.") from None
    return _unique(pairs)


async def read(request: Request, *, max_bytes: int) -> dict[str, str]:
    """The body's parameters, each present at most once and never empty."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in (FORM, JSON):
        raise InvalidRequest(f"The request body must be {FORM} or {JSON}.")
    body = await _body(request, max_bytes)
    return _from_json(body) if media_type == JSON else _from_form(body)
