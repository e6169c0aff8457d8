"""Authorization server metadata (RFC 8414 §2), listing exactly what this server supports."""

from __future__ import annotations

from typing import Any

from services.common import scopes


def authorization_server_metadata(issuer: str) -> dict[str, Any]:
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
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic", "client_secret_post"],
        "authorization_response_iss_parameter_supported": True,
    }
