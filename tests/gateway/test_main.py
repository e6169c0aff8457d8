"""The gateway as its own process: two listeners, JSON logs, graceful stop, settings errors."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from services.authorize import app_form
from services.common.connection_limits import MAX_LINGERING
from services.common.ratelimit import RateLimit
from services.common.settings import ConfigError, Env
from services.gateway.app import connection_cap
from services.gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.gateway.conftest import FakeUpstream


async def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if process.poll() is not None:
                raise AssertionError(f"gateway exited early ({process.returncode})")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become ready")


@pytest_asyncio.fixture
async def gateway_process(upstreams: tuple[FakeUpstream, str, FakeUpstream, str],
                          test_env: dict[str, str],
                          ) -> AsyncIterator[tuple[str, str, subprocess.Popen[bytes]]]:
    _, authorize_url, _, token_url = upstreams
    port, admin_port = free_port(), free_port()
    env = {**os.environ, **test_env, "OTESSE_GATEWAY_PORT": str(port),
           "OTESSE_GATEWAY_ADMIN_PORT": str(admin_port),
           "OTESSE_GATEWAY_AUTHORIZE_URL": authorize_url, "OTESSE_GATEWAY_TOKEN_URL": token_url}
    command = [sys.executable, "-m", "services.gateway"]
    # Started with the usual small soft limit on open files (util-linux prlimit execs the
    # gateway in place), so the test sees start-up raise it.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    prlimit = shutil.which("prlimit")
    if prlimit and hard != resource.RLIM_INFINITY and hard > 1024:
        command = [prlimit, f"--nofile=1024:{hard}", "--", *command]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await _wait_ready(f"http://127.0.0.1:{admin_port}/readyz", process)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


async def test_process_serves_public_and_admin_ports_and_stops_on_sigterm(
        gateway_process: tuple[str, str, subprocess.Popen[bytes]]) -> None:
    public, admin, process = gateway_process
    async with httpx.AsyncClient() as client:
        proxied = await client.get(f"{public}/oauth/authorize?client_id=x",
                                   headers={"X-Request-ID": "proc-test-1"})
        hidden = await client.get(f"{public}/metrics")
        # Headers far past the cap are refused by the server while they arrive (the process
        # runs with the transport-level cap), never held whole.
        flood = await client.get(f"{public}/oauth/authorize",
                                 headers={"X-Flood": "a" * (1024 * 1024)})
        health = await client.get(f"{admin}/healthz")
        ready = await client.get(f"{admin}/readyz")
        metrics = await client.get(f"{admin}/metrics")
    assert proxied.status_code == 200 and proxied.json()["upstream"] == "authorize"
    assert hidden.status_code == 404
    assert flood.status_code == 431
    assert flood.json()["error"] == "invalid_request"
    assert flood.headers["connection"] == "close"
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["checks"] == {"proxy": "ok", "listening": "ok"}
    assert "otesse_gateway_rate_limit_fail_open_total" in metrics.text
    # Proxied requests are labelled by route (a bounded set), never by raw path.
    assert 'otesse_http_request_duration_seconds_count{method="GET",route="/*",service="gateway"' \
        in metrics.text
    assert "client_id" not in metrics.text
    # Start-up raised the open-files limit to its maximum (connections are descriptors).
    limits = Path(f"/proc/{process.pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines()
                      if line.startswith("Max open files"))
    assert soft == hard

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 10) == 0
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().decode().splitlines()
             if line.startswith("{")]
    access = [line for line in lines if line["msg"] == "request" and line["path"] ==
              "/oauth/authorize"]
    assert access and access[0]["request_id"] == "proc-test-1"
    assert access[0]["service"] == "gateway" and access[0]["status"] == 200


@pytest.mark.parametrize(("name", "value", "message"), [
    ("OTESSE_GATEWAY_RATE_TOKEN_PER_IP", "lots", "OTESSE_GATEWAY_RATE_TOKEN_PER_IP must be"),
    ("OTESSE_GATEWAY_RATE_LOGIN_PER_IP", "10/0", "OTESSE_GATEWAY_RATE_LOGIN_PER_IP must be"),
    ("OTESSE_GATEWAY_TOKEN_URL", "127.0.0.1:8002", "OTESSE_GATEWAY_TOKEN_URL must be"),
    ("OTESSE_GATEWAY_TOKEN_URL", "https://token:8002",
     "OTESSE_GATEWAY_TOKEN_URL must be an http:// URL"),
    ("OTESSE_GATEWAY_AUTHORIZE_URL", "https://authorize:8001",
     "OTESSE_GATEWAY_AUTHORIZE_URL must be an http:// URL"),
    ("OTESSE_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/33", "OTESSE_GATEWAY_TRUSTED_PROXIES must be"),
    ("OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES", "-1", "OTESSE_GATEWAY_MAX_TOKEN_BODY_BYTES must be"),
    ("OTESSE_GATEWAY_MAX_FORM_BODY_BYTES", "2000000", "OTESSE_GATEWAY_MAX_FORM_BODY_BYTES must"),
    ("OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS", "0", "OTESSE_GATEWAY_HEADER_TIMEOUT_SECONDS must"),
    ("OTESSE_GATEWAY_MAX_CONNECTIONS", "lots", "OTESSE_GATEWAY_MAX_CONNECTIONS must be"),
    ("OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP", "1/-1",
     "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP must be"),
], ids=["rate-not-a-number", "rate-zero-window", "url-without-scheme", "token-url-https",
        "authorize-url-https", "bad-cidr",
        "negative-cap", "form-cap-over-1MiB", "no-header-time", "connections-not-a-number",
        "negative-window"])
def test_bad_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewaySettings.from_env(Env({name: value}))


def test_rate_limits_parse_and_turn_off() -> None:
    settings = GatewaySettings.from_env(Env({
        "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "5/10", "OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "off",
        "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "0"}))
    assert settings.rate_token_per_ip == RateLimit(5, 10.0)
    assert settings.rate_login_per_ip is None
    assert settings.rate_client_auth_failures_per_ip is None


def test_the_upload_cap_fits_the_authorize_form_cap() -> None:
    """The gateway cannot import the authorize service; this test holds the two caps together:
    a logo the registration form accepts must not be refused at the edge."""
    settings = GatewaySettings.from_env(Env({}))
    assert settings.max_upload_body_bytes == app_form.MAX_FORM_BYTES


@pytest.mark.parametrize(("configured", "open_files", "expected"), [
    (4096, 1 << 20, 4096),
    (4096, 4096, 4096 - 64 - MAX_LINGERING - 200),
    (4096, 100, 1),
], ids=["plenty-of-descriptors", "cap-lowered-to-fit", "never-below-one"])
def test_the_connection_cap_fits_the_open_files_limit(configured: int, open_files: int,
                                                      expected: int) -> None:
    settings = GatewaySettings.from_env(Env({"OTESSE_GATEWAY_MAX_CONNECTIONS": str(configured),
                                             "OTESSE_GATEWAY_UPSTREAM_MAX_CONNECTIONS": "100"}))
    assert connection_cap(settings, open_files, upstream_pools=2) == expected


def test_serve_command_reports_a_bad_setting_in_one_line() -> None:
    env = {**os.environ, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "lots"}
    result = subprocess.run([sys.executable, "-m", "services.cli.main", "serve", "gateway"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "otesse-auth: configuration error: OTESSE_GATEWAY_RATE_TOKEN_PER_IP must be "
        "COUNT/SECONDS (e.g. 30/60) or off, got 'lots'"]
