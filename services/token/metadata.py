"""Authorization server metadata (RFC 8414 §2), listing exactly what this server supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.common import scopes


def authorization_server_metadata(issuer: str, *, grant_types: Sequence[str]) -> dict[str, Any]:
    """``grant_types`` are the ones the token endpoint dispatches to (RFC 8414 §2:
    "grant_types_supported … JSON array containing a list of the OAuth 2.0 grant type values
    that this authorization server supports")."""
    # RFC 8414 §3.3: "The "issuer" value returned MUST be identical to the authorization
    # server's issuer identifier value into which the well-known URI string was inserted".
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "scopes_supported": list(scopes.CATALOGUE),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(grant_types),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": True,
    }
