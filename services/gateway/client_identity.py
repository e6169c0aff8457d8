"""The ``client_id`` a token request claims, for the per-client rate limit (RFC 6749 §2.3.1).

The client is named by HTTP Basic (``client_secret_basic``: the id and secret are each
form-urlencoded, then joined by ``:`` and base64-encoded) or by a ``client_id`` field in the
body, form-encoded (RFC 6749) or JSON (the public documentation). The gateway only reads the
claimed id, never the secret, and authenticates nothing: the token service does that. A request
naming no client is limited per IP only.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import parse_qsl, unquote_plus

MAX_CLIENT_ID = 256


def _bounded(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID:
        return value
    return None


def from_basic(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, _ = decoded.partition(":")
    return _bounded(unquote_plus(client_id)) if colon else None


def from_body(content_type: bytes | None, body: bytes) -> str | None:
    media_type = (content_type or b"").split(b";")[0].strip().lower()
    try:
        if media_type == b"application/json":
            document = json.loads(body)
            return _bounded(document.get("client_id")) if isinstance(document, dict) else None
        if media_type == b"application/x-www-form-urlencoded":
            for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
                if name == "client_id":
                    return _bounded(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return None


def claimed_client_id(authorization: bytes | None, content_type: bytes | None,
                      body: bytes) -> str | None:
    return from_basic(authorization) or from_body(content_type, body)
