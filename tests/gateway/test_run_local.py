"""``make run`` (scripts/run-local): every service up behind the gateway, the demo printed,
Ctrl-C stopping everything, a second run reusing the demo, a busy port named in one line, a
service that dies started again (one that cannot start stops everything)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PORT_VARIABLES = ("OTESSE_GATEWAY_PORT", "OTESSE_GATEWAY_ADMIN_PORT", "OTESSE_AUTHORIZE_PORT",
                  "OTESSE_TOKEN_HTTP_PORT", "OTESSE_TOKEN_GRPC_PORT", "OTESSE_TOKEN_EDGE_PORT",
                  "OTESSE_REGISTRY_GRPC_PORT", "OTESSE_REGISTRY_HTTP_PORT",
                  "OTESSE_BOOKINGS_PORT")


@pytest.fixture(scope="module")
def run_env(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
            ) -> dict[str, str]:
    """This run's stores, a state folder of its own, and every port moved to a free one."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTESSE_")}
    env.update(test_env)
    env["OTESSE_RUN_DIR"] = str(tmp_path_factory.mktemp("run"))
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    return env


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(ROOT / "scripts" / "run-local")], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_until(process: subprocess.Popen[str], marker: str, seconds: float = 60) -> str:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"no {marker!r} in:\n{''.join(seen)[-4000:]}")


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    return rest


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _demo(printed: str) -> tuple[str, str, str]:
    password = re.search(r"demo user\s+\S+\s+/\s+password (\S+)", printed)
    client_id = re.search(r"client_id\s+(otesse_ci_\S+)", printed)
    url = re.search(r"^\s+(http://localhost:\d+/oauth/authorize\?\S+)$", printed, re.M)
    assert password and client_id and url, printed
    return password.group(1), client_id.group(1), url.group(1)


def test_run_local_starts_everything_and_stops_on_ctrl_c(run_env: dict[str, str]) -> None:
    process = _start(run_env)
    try:
        printed = _read_until(process, "Ctrl-C stops everything.")
        # A second copy while the first runs: one clear line, nothing started.
        second = subprocess.run([str(ROOT / "scripts" / "run-local")], env=run_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        password, client_id, authorize_url = _demo(printed)
        gateway = f"http://127.0.0.1:{run_env['OTESSE_GATEWAY_PORT']}"
        with httpx.Client(base_url=gateway, headers={"Host": "localhost"}) as client:
            page = client.get(authorize_url.replace("http://localhost:", "http://127.0.0.1:"))
            metadata = client.get("/.well-known/oauth-authorization-server")
            exchange = client.post("/oauth/token", json={
                "grant_type": "authorization_code", "code": "not-a-code",
                "redirect_uri": "http://127.0.0.1:8765/callback", "client_id": client_id,
                "client_secret": "otesse_cs_wrong"})
            hidden = client.get("/metrics")
    finally:
        rest = _stop(process)
    assert "[registry]" in printed and "[token]" in printed and "[gateway]" in printed
    for service in ("registry", "token", "authorize", "gateway", "bookings"):
        assert f"run-local: {service} is ready" in printed
    assert second.returncode == 1
    assert second.stdout.strip().splitlines()[-1].startswith("run-local: port ")
    assert "already in use" in second.stdout
    assert page.status_code in (200, 302, 303)
    assert metadata.json()["issuer"] == f"http://localhost:{run_env['OTESSE_GATEWAY_PORT']}"
    assert exchange.status_code in (400, 401) and "error" in exchange.json()
    assert hidden.status_code == 404
    assert len(password) >= 12
    assert process.returncode == 0
    assert "run-local: stopped" in rest
    assert all(_port_free(int(run_env[name])) for name in PORT_VARIABLES)

    # Running it again reuses the demo user and app.
    again = _start(run_env)
    try:
        printed_again = _read_until(again, "Ctrl-C stops everything.")
    finally:
        _stop(again)
    assert _demo(printed_again)[:2] == (password, client_id)
    state = Path(run_env["OTESSE_RUN_DIR"]) / "demo.json"
    assert state.stat().st_mode & 0o077 == 0  # the demo secret is readable by its owner only


def test_run_local_stops_everything_when_a_service_cannot_start(run_env: dict[str, str],
                                                                 ) -> None:
    env = {**run_env, "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "lots"}
    result = subprocess.run([str(ROOT / "scripts" / "run-local")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert ("configuration error: OTESSE_GATEWAY_RATE_TOKEN_PER_IP must be COUNT/SECONDS"
            in result.stdout)
    # The token service reads the gateway's settings for its own edge, and starts first.
    assert "run-local: token stopped while starting" in result.stdout
    assert result.stdout.rstrip().endswith("run-local: stopped")
    assert all(_port_free(int(run_env[name])) for name in PORT_VARIABLES)


def _listener_pid(port: int) -> int:
    """The process listening on ``port`` on loopback (from /proc: no tool needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(entry.name)
    raise AssertionError(f"nothing listens on {port}")


def test_run_local_restarts_a_service_that_dies_and_still_stops_on_ctrl_c(
        run_env: dict[str, str]) -> None:
    process = _start(run_env)
    try:
        printed = _read_until(process, "Ctrl-C stops everything.")
        password, client_id, _ = _demo(printed)
        registry = _listener_pid(int(run_env["OTESSE_REGISTRY_GRPC_PORT"]))
        os.kill(registry, signal.SIGKILL)
        restarted = _read_until(process, "run-local: registry is ready again")
        # The stack serves again, the registry included (client authentication asks it), as
        # soon as the token service's channel has reconnected (within its 2 s backoff).
        gateway = f"http://127.0.0.1:{run_env['OTESSE_GATEWAY_PORT']}"
        deadline = time.monotonic() + 5.0
        with httpx.Client(base_url=gateway, headers={"Host": "localhost"}) as client:
            while True:
                exchange = client.post("/oauth/token", json={
                    "grant_type": "authorization_code", "code": "not-a-code",
                    "redirect_uri": "http://127.0.0.1:8765/callback", "client_id": client_id,
                    "client_secret": "otesse_cs_wrong"})
                if exchange.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        again = _listener_pid(int(run_env["OTESSE_REGISTRY_GRPC_PORT"]))
        assert again != registry
        # Dying again soon after waits twice as long; a clean exit is told apart from a kill.
        os.kill(again, signal.SIGTERM)
        restarted_again = _read_until(process, "run-local: registry is ready again")
    finally:
        rest = _stop(process)
    assert "run-local: registry was killed by SIGKILL; restarting it in 1 s" in restarted
    assert "run-local: registry exited with code 0; restarting it in 2 s" in restarted_again
    # One line says why; nothing else was stopped or started.
    assert "run-local: stopping" not in restarted
    assert restarted.count("run-local:") == 2, restarted
    assert (exchange.status_code, exchange.json()["error"]) == (401, "invalid_client")
    assert len(password) >= 12
    assert process.returncode == 0
    assert "run-local: stopped" in rest
    assert all(_port_free(int(run_env[name])) for name in PORT_VARIABLES)
