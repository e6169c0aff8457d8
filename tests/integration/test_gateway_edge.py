"""The gateway in front of the real services: what the public can and cannot reach, and the
per-client rate limit on ``/oauth/token`` answered as an OAuth-style JSON error."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.people import register_app
from tests.integration.stack import CLIENT_RATE, Stack

pytest_plugins = ["tests.integration.fixtures"]

NOT_PUBLIC = {
    "fails because /healthz is an internal path": "/healthz",
    "fails because /readyz is an internal path": "/readyz",
    "fails because /metrics is an internal path": "/metrics",
}


@pytest.mark.parametrize("path", list(NOT_PUBLIC.values()), ids=list(NOT_PUBLIC))
async def test_internal_paths_are_not_routed_publicly(stack: Stack, path: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.gateway + path)
    assert response.status_code == 404
    assert "otesse_" not in response.text


async def test_an_unknown_host_is_refused(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.gateway + "/.well-known/oauth-authorization-server",
                                  headers={"Host": "evil.example"})
    assert response.status_code == 421


async def test_every_response_carries_a_request_id_and_nosniff(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.gateway + "/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    # Plain http locally: HSTS only on HTTPS.
    assert "strict-transport-security" not in response.headers


async def test_a_client_over_its_token_rate_gets_429_with_retry_after(stack: Stack) -> None:
    app = await register_app(stack.registry_grpc, redirect_uri="http://127.0.0.1:8765/cb")
    form = {"grant_type": "refresh_token", "refresh_token": "otesse_rt_made-up",
            "client_id": app.client_id, "client_secret": app.client_secret}
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient() as http:
        # The bucket refills slowly (CLIENT_RATE a minute), so a busy machine may let one or
        # two more through; the limit must bite soon after CLIENT_RATE all the same.
        while len(answers) < CLIENT_RATE + 5 and (not answers
                                                  or answers[-1].status_code != 429):
            answers.append(await http.post(stack.gateway + "/oauth/token", data=form))
    limited = answers[-1]
    assert limited.status_code == 429
    assert len(answers) > CLIENT_RATE
    assert {a.status_code for a in answers[:-1]} == {400}
    assert limited.json()["error"] == "too_many_requests"
    assert int(limited.headers["retry-after"]) >= 1
    # Only that client is limited.
    other = await register_app(stack.registry_grpc, redirect_uri="http://127.0.0.1:8765/cb")
    async with httpx.AsyncClient() as http:
        response = await http.post(stack.gateway + "/oauth/token", data={
            **form, "client_id": other.client_id, "client_secret": other.client_secret})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
