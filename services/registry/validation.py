"""Checks on every client field (RFC 6749 §2 and §3.1.2, RFC 8252 §7.3, RFC 9700 §2.1).

Each check raises :class:`~services.common.rpc_errors.InvalidArgument` naming the field.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Sequence
from urllib.parse import urlsplit

from services.common import scopes
from services.common.rpc_errors import InvalidArgument

MAX_NAME = 100
MAX_DESCRIPTION = 1000
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 2000
MAX_OWNER_ID = 64


def _has_control_chars(value: str, *, allow_newlines: bool = False) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    return any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in allowed for ch in value)


def name(value: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument("name", "is required")
    if len(value) > MAX_NAME:
        raise InvalidArgument("name", f"must be at most {MAX_NAME} characters")
    if _has_control_chars(value):
        raise InvalidArgument("name", "must not contain control characters")
    return value


def description(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_DESCRIPTION:
        raise InvalidArgument("description", f"must be at most {MAX_DESCRIPTION} characters")
    if _has_control_chars(value, allow_newlines=True):
        raise InvalidArgument("description", "must not contain control characters")
    return value


def owner_user_id(value: str) -> str:
    if not value or len(value) > MAX_OWNER_ID or _has_control_chars(value):
        raise InvalidArgument("owner_user_id", "is required (at most 64 characters)")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri(value: str) -> str:
    field = "redirect_uris"
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_REDIRECT_URI_LENGTH:
        raise InvalidArgument(field, f"{value[:60]!r}… is longer than {MAX_REDIRECT_URI_LENGTH}")
    if any(ch.isspace() for ch in value) or _has_control_chars(value) or not value.isascii():
        raise InvalidArgument(field, f"{value!r} must be ASCII with no spaces or control chars")
    # RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component."
    if "#" in value:
        raise InvalidArgument(field, f"{value!r} must not contain a fragment")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidArgument(field, f"{value!r} is not a valid URL") from None
    # RFC 6749 §3.1.2: "The redirection endpoint URI MUST be an absolute URI."
    if not parts.scheme or not parts.netloc or not host:
        raise InvalidArgument(field, f"{value!r} must be an absolute URL")
    if "@" in parts.netloc:
        raise InvalidArgument(field, f"{value!r} must not contain user information")
    if parts.scheme == "https":
        return value
    # RFC 8252 §7.3: loopback redirects use http; everything else must be TLS-protected.
    if parts.scheme == "http" and _is_loopback(host):
        return value
    raise InvalidArgument(field, f"{value!r} must use https (http only for loopback hosts)")


def redirect_uris(values: Sequence[str]) -> list[str]:
    if not values:
        raise InvalidArgument("redirect_uris", "at least one redirect URI is required")
    if len(values) > MAX_REDIRECT_URIS:
        raise InvalidArgument("redirect_uris", f"at most {MAX_REDIRECT_URIS} are allowed")
    checked = [redirect_uri(value) for value in values]
    return list(dict.fromkeys(checked))


def allowed_scopes(values: Sequence[str]) -> list[str]:
    if not values:
        raise InvalidArgument("allowed_scopes", "at least one scope is required")
    unknown = scopes.unknown(values)
    if unknown:
        raise InvalidArgument("allowed_scopes", f"unknown scope {unknown[0]!r}; known: "
                              + ", ".join(scopes.CATALOGUE))
    return scopes.join(values).split(" ")
