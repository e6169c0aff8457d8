"""The hot route served past Starlette's router (:mod:`services.common.fast_route`) answers
exactly as the router does: each failure with the same status, body and headers, the request id
and the metric's route label, another method 405, other paths untouched. Each case is asked of
two apps under uvicorn, one with the fast route and one without, and the answers compared."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import InvalidGrant, InvalidRequest
from services.common.fast_route import FastRouteStarlette
from services.common.http import RequestContextMiddleware, json_error_handlers
from tests.servers import serve_app


class Boom(Exception):
    """A bug: nothing but the catch-all handler knows it."""


async def hot(request: Request) -> Response:
    form = await request.form()
    what = form.get("what")
    if what == "grant":
        raise InvalidGrant("The refresh token is invalid, expired or revoked.")
    if what == "request":
        raise InvalidRequest("The grant_type parameter is required.")
    if what == "bug":
        raise Boom("a bug")
    return JSONResponse({"ok": True, "app": type(request.app).__name__},
                        headers={"Cache-Control": "no-store"})


async def other(request: Request) -> Response:
    return JSONResponse({"other": True})


class Marked:
    """Middleware of the app's own (as the authorize service's security headers): it must wrap
    the fast route too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-marked", b"yes")]}
            await send(message)
        await self.app(scope, receive, marked)


def build(fast: bool, service: str) -> Starlette:
    route = Route("/oauth/token", hot, methods=["POST"])
    routes = [route, Route("/other", other, methods=["GET"])]
    handlers = json_error_handlers()
    app: Starlette
    if fast:
        app = FastRouteStarlette(routes=routes, exception_handlers=handlers,
                                 fast=("POST", route))
    else:
        app = Starlette(routes=routes, exception_handlers=handlers)
    app.router.redirect_slashes = False  # as every service
    app.add_middleware(Marked)
    app.add_middleware(RequestContextMiddleware, service=service)
    return app


@pytest_asyncio.fixture
async def urls() -> AsyncIterator[tuple[str, str]]:
    async with (serve_app(build(True, "fast-route-test"), lifespan="off") as fast,
                serve_app(build(False, "slow-route-test"), lifespan="off") as slow):
        yield fast, slow


@pytest.mark.parametrize(("method", "path", "form"), [
    ("POST", "/oauth/token", {"what": "fine"}),
    ("POST", "/oauth/token", {"what": "grant"}),
    ("POST", "/oauth/token", {"what": "request"}),
    ("GET", "/oauth/token", None),
    ("PUT", "/oauth/token", {"what": "fine"}),
    ("GET", "/other", None),
    ("POST", "/oauth/token/", {"what": "fine"}),
])
async def test_the_fast_route_answers_as_the_router_does(
        urls: tuple[str, str], method: str, path: str, form: dict[str, str] | None) -> None:
    answers = []
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            answers.append(await http.request(method, url + path, data=form,
                                              headers={"X-Request-Id": "fast-route-rid-1"}))
    fast, slow = answers
    assert fast.status_code == slow.status_code
    assert fast.json() | {"app": None} == slow.json() | {"app": None}
    for name in ("content-type", "cache-control", "www-authenticate", "allow", "x-request-id",
                 "x-marked"):
        assert fast.headers.get(name) == slow.headers.get(name), name
    assert fast.headers["x-request-id"] == "fast-route-rid-1"
    assert fast.headers["x-marked"] == "yes"


async def test_the_fast_route_keeps_the_request_context_and_the_app(
        urls: tuple[str, str]) -> None:
    fast_url, _ = urls

    def served() -> float:
        return REGISTRY.get_sample_value("otesse_http_request_duration_seconds_count", {
            "service": "fast-route-test", "method": "POST", "route": "/oauth/token",
            "status": "200"}) or 0.0

    before = served()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(fast_url + "/oauth/token", data={"what": "fine"})
    assert answer.json() == {"ok": True, "app": "FastRouteStarlette"}
    assert served() == before + 1


async def test_a_bug_on_the_fast_route_is_a_500_and_is_logged(
        urls: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    answers = []
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            with caplog.at_level(logging.ERROR):
                caplog.clear()
                answers.append(await http.post(url + "/oauth/token", data={"what": "bug"}))
                # The server logs the exception in both cases (the handler answered first).
                assert any(record.exc_info and record.exc_info[0] is Boom
                           for record in caplog.records)
    fast, slow = answers
    assert fast.status_code == slow.status_code == 500
    for answer in answers:
        # The same answer but for the request id it names (each request has its own).
        assert answer.json()["error"] == "server_error"
        request_id = answer.headers["x-request-id"]
        assert answer.json()["error_description"] == slow.json()["error_description"].replace(
            slow.headers["x-request-id"], request_id)
        assert request_id in answer.json()["error_description"]
