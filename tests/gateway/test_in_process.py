"""The edge in front of an app in the same process (``create_edge_app``, the token service's
public listener): what the app does not expect is still a clean answer, counted and logged
once, by the edge."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from services.common.http import Readiness, RequestContextMiddleware, json_error_handlers
from services.common.settings import Env
from services.gateway.app import create_edge_app
from services.gateway.forwarded import Client
from services.gateway.in_process import InProcessUpstreams
from services.gateway.proxy import upstream_headers
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


async def test_an_answer_in_parts_arrives_whole_and_internal_fields_never_leave() -> None:
    """The app learns the request has ended only once its answer is complete (a streamed
    answer is never cut), and its internal fields, whatever their case, stay inside: the
    client-authentication mark is still charged."""
    seen: dict[str, bool] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the body
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"Content-Type", b"application/json"),
            (b"X-Otesse-Client-Auth", b"failed"), (b"Connection", b"keep-alive")]})
        for part in (b'{"error":', b'"invalid_client"', b"}"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        ended = asyncio.ensure_future(receive())
        await asyncio.sleep(0.05)
        seen["ended before the answer"] = ended.done()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen["ended after it"] = (await ended)["type"] == "http.disconnect"

    upstreams = InProcessUpstreams({"token": app})
    sent: list[Message] = []

    async def collect(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"asgi": {"version": "3.0"}, "http_version": "1.1", "path": "/oauth/token",
                    "server": ("127.0.0.1", 8005)}
    answer = await upstreams.forward(
        "token", method="POST", target=b"/oauth/token", headers=[(b"host", b"localhost")],
        body=b"grant_type=x", send=collect, client=Client(ip="192.0.2.7", proto="https", via=()),
        scope=scope)
    assert answer.status == 401 and answer.client_auth_failed
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b'{"error":"invalid_client"}'
    assert sent[0]["headers"] == [(b"content-type", b"application/json")]
    assert seen == {"ended before the answer": False, "ended after it": True}


async def test_the_app_sees_the_client_the_edge_resolved_and_nothing_the_client_claimed(
        ) -> None:
    received: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: Message) -> None:
        pass

    client = Client(ip="192.0.2.7", proto="http", via=())
    # What the edge hands over: the client's fields as upstream_headers makes them.
    claimed = [(b"host", b"localhost"), (b"x-forwarded-for", b"6.6.6.6"),
               (b"forwarded", b"for=6.6.6.6"), (b"x-real-ip", b"6.6.6.6"),
               (b"x-otesse-client-auth", b"ok"), (b"x-request-id", b"mine")]
    await InProcessUpstreams({"token": app}).forward(
        "token", method="POST", target=b"/oauth/token?x=1",
        headers=upstream_headers(claimed, client), body=None, send=ignore, client=client,
        scope={"asgi": {"version": "3.0"}, "http_version": "1.1", "path": "/oauth/token"})
    (seen,) = received
    assert seen["client"] == ("192.0.2.7", 0) and seen["scheme"] == "http"
    assert (seen["path"], seen["raw_path"], seen["query_string"]) == (
        "/oauth/token", b"/oauth/token", b"x=1")
    fields = dict(seen["headers"])
    assert fields[b"x-forwarded-for"] == b"192.0.2.7"
    assert b"forwarded" not in fields and b"x-real-ip" not in fields
    assert b"x-otesse-client-auth" not in fields
    assert fields[b"x-request-id"] != b"mine"
