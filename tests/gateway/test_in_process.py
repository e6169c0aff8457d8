"""The edge in front of an app in the same process (``create_edge_app``, the token service's
public listener): what the app does not expect is still a clean answer, counted and logged
once, by the edge."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.http import Readiness, RequestContextMiddleware, json_error_handlers
from services.common.settings import Env
from services.gateway.app import create_edge_app
from services.gateway.settings import GatewaySettings
from tests.servers import serve_app

OFF = {name: "off" for name in ("OTESSE_GATEWAY_RATE_LOGIN_PER_IP",
                                "OTESSE_GATEWAY_RATE_TOKEN_PER_IP",
                                "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP")}


async def test_a_bug_behind_the_edge_is_one_json_500_naming_the_request_id(
        caplog: pytest.LogCaptureFixture) -> None:
    async def endpoint(request: Request) -> Response:
        fields: dict[str, Response] = {}
        return fields["client_id"]  # a bug: the field was never there

    app = Starlette(routes=[Route("/oauth/token", endpoint, methods=["POST"])],
                    exception_handlers=json_error_handlers())
    app.add_middleware(RequestContextMiddleware, service="token")
    edge = create_edge_app(GatewaySettings.from_env(Env(OFF)), Readiness(), {"token": app},
                           service="token-edge")
    caplog.set_level(logging.INFO)
    async with serve_app(edge) as url, httpx.AsyncClient(timeout=10) as http:
        response = await http.post(url.replace("127.0.0.1", "localhost") + "/oauth/token",
                                   data={"grant_type": "x"},
                                   headers={"X-Request-ID": "edge-bug-1"})
    assert response.status_code == 500
    assert response.headers.get_list("x-request-id") == ["edge-bug-1"]
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    assert body["error"] == "server_error"
    assert "edge-bug-1" in body["error_description"] and "Traceback" not in response.text
    # One access line (the edge's) and one error with its traceback.
    assert [r.__dict__["status"] for r in caplog.records if r.name == "otesse.access"] == [500]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
