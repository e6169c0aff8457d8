"""RFC 8414 metadata lists exactly what is supported; the JWKS has the RFC 7517 shape; the
health routes answer."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.common import scopes
from tests.token.conftest import Client, TokenService, tokens_for


async def test_metadata_lists_exactly_what_is_supported(token: TokenService) -> None:
    response = await token.http.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    issuer = "http://localhost:8000"
    assert response.json() == {
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
    # What the token endpoint dispatches on is what the metadata announces.
    assert token.components.token_endpoint.grant_types == \
        response.json()["grant_types_supported"]


async def test_jwks_shape(token: TokenService) -> None:
    response = await token.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    keys = response.json()["keys"]
    assert len(keys) >= 2
    assert len({key["kid"] for key in keys}) == len(keys)
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
        assert len(key["x"]) == len(key["y"]) == 43
        assert "d" not in key


async def test_metrics_count_issuance(token: TokenService, redis: aioredis.Redis,
                                      redis_prefix: str, client: Client) -> None:
    await tokens_for(token, redis, redis_prefix, client)
    text = (await token.http.get("/metrics")).text
    assert 'otesse_token_issued_total{grant_type="authorization_code"}' in text


async def test_health_routes(token: TokenService) -> None:
    assert (await token.http.get("/healthz")).status_code == 200
    ready = await token.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgres", "redis", "registry", "signing_keys"}
    assert (await token.http.get("/metrics")).status_code == 200


async def test_the_announced_grant_types_are_exactly_the_ones_dispatched(
        token: TokenService, client: Client) -> None:
    """One list: metadata is built from the registered grants, and the endpoint refuses every
    other grant type naming exactly that list."""
    announced = (await token.http.get("/.well-known/oauth-authorization-server")).json()[
        "grant_types_supported"]
    for grant_type in announced:
        response = await token.http.post("/oauth/token", data={
            "grant_type": grant_type, "client_id": client.client_id,
            "client_secret": client.secret})
        # Dispatched: whatever is missing, the grant type itself is not the complaint.
        assert response.json()["error"] != "unsupported_grant_type", grant_type
    refused = await token.http.post("/oauth/token", data={"grant_type": "password"})
    assert refused.json()["error"] == "unsupported_grant_type"
    assert refused.json()["error_description"] == (
        f"Supported grant types: {', '.join(announced)}.")
