"""The authorize service's one renderer of errors as pages: a store that fails for real is a
503 page with ``Retry-After``, answered by the service itself, with no traceback in the log.

The failure here is the hardest to recognise: PostgreSQL ending a session in a fast restart,
and a statement sent before the connection's close arrived (the close is held back)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.authorize.pages import html_error_handlers
from services.common.http import RequestContextMiddleware
from tests.faults.stores import PrivatePostgres, ended_session, private_postgres
from tests.servers import serve_app


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    with private_postgres("otesse-pages-test") as running:
        yield running


async def test_a_session_the_database_ended_is_a_503_page(
        server: PrivatePostgres, caplog: pytest.LogCaptureFixture) -> None:
    async with ended_session(server) as pool:
        async def sign_in(request: Request) -> Response:
            await pool.fetchval("SELECT 1")
            raise AssertionError("the ended session answered")

        app = Starlette(routes=[Route("/login", sign_in, methods=["POST"])],
                        exception_handlers=html_error_handlers())
        app.add_middleware(RequestContextMiddleware, service="authorize")
        caplog.set_level(logging.INFO)
        async with serve_app(app, lifespan="off") as url, httpx.AsyncClient() as http:
            response = await http.post(url + "/login")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.headers["content-type"].startswith("text/html")
    assert "Otesse is temporarily unavailable" in response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.__dict__["status"] for r in caplog.records if r.name == "otesse.access"] == [503]
