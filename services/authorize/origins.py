"""The origin of a redirect URI (RFC 6454 §4), as a CSP source expression."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SAFE_SOURCE = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\]"
                          r"(?::[0-9]{1,5})?$")


def csp_origin(uri: str) -> str | None:
    """``scheme://host[:port]`` of ``uri``, or ``None`` when it cannot be a CSP source safely."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return origin if _SAFE_SOURCE.match(origin) else None


def display_host(uri: str) -> str:
    """What the consent screen shows as the place the user will be sent to."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or uri
        port = parts.port
    except ValueError:
        return uri
    return host + (f":{port}" if port is not None else "")
