"""Never a password, code, session id or CSRF token in a log line (DESIGN §4)."""

from __future__ import annotations

import logging

import httpx
import pytest

from services.common.log import JsonFormatter
from tests.authorize.conftest import App, Person, authorize_params, csrf_token, query, sign_in


async def test_a_whole_flow_logs_no_secret(browser: httpx.AsyncClient, app: App,
                                           person: Person,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = await browser.get("/login")
    await browser.post("/login", data={"email": person.email, "password": "typo-password",
                                       "csrf_token": csrf_token(wrong.text)})
    await sign_in(browser, person)
    screen = await browser.get("/oauth/authorize", params=authorize_params(app))
    approved = await browser.post("/oauth/authorize/decision", data={
        "csrf_token": csrf_token(screen.text), "decision": "approve",
        "request_id": screen.text.split('name="request_id" value="')[1].split('"')[0]})
    code = query(approved.headers["location"])["code"][0]
    secrets = [person.password, "typo-password", code, browser.cookies["otesse_session"],
               csrf_token(screen.text), "xyz-state"]
    formatter = JsonFormatter("authorize")
    # The service's own lines; the test's HTTP client logs its URLs, and uvicorn's access log
    # is switched off in production (``configure_logging``, ``serve_http``).
    lines = [formatter.format(record) for record in caplog.records
             if not record.name.startswith(("httpx", "httpcore", "uvicorn.access"))]
    assert any('"path": "/oauth/authorize/decision"' in line for line in lines)
    for secret in secrets:
        assert not [line for line in lines if secret in line], secret
