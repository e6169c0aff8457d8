"""Authlib's OAuth 2.0 client on httpx, imported once and quietly.

Authlib 1.9 prefers the ``httpx2`` package for this client and warns, at import, when it falls
back to ``httpx`` (the HTTP client this project locks); the client is the same either way, and
the suite turns warnings into errors, so that one warning is silenced here and nowhere else.
"""

from __future__ import annotations

import warnings

from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oauth2.rfc6749.errors import MismatchingStateException

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

__all__ = ["AsyncOAuth2Client", "MismatchingStateException", "OAuthError", "generate_token"]
