"""The whole of Otesse Auth as real processes on loopback, once per test run.

Registry, token, authorize, gateway and bookings each run as ``otesse-auth serve <svc>`` with
this run's database and Redis prefix, every listener on a free port. The services are wired to
each other by ``scripts/run-local``'s own ``plan()`` (so the tests start them exactly as
``make run`` does), the issuer is the gateway's ``http://localhost:<port>``, and the fixture
waits for every ``/readyz``. At the end each gets SIGTERM and must exit 0.

The session fixture ``stack`` is in :mod:`tests.integration.fixtures`: test modules that need
it say ``pytest_plugins = ["tests.integration.fixtures"]``, so the browser tests in
``tests/e2e`` share the same single stack.

A test may kill one service and start it again (:class:`ServiceProcesses`, ``Stack.processes``),
and may change settings (``running_stack(settings=…)``, applied last).

Settings chosen for tests: the refresh retry window is ``RETRY_WINDOW`` seconds (short, so a
reuse after it can be shown without a long wait); rate limits are off except the token
service's per-client limit (``CLIENT_RATE`` token requests a minute), which only clients made
for the rate-limit tests come near, and the gateway's limit on failed client authentications
per address (``AUTH_FAILURE_RATE`` a minute), which only the addresses the attack tests
invent (through ``X-Forwarded-For``) come near.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OTESSE_AUTH = ROOT / ".venv" / "bin" / "otesse-auth"
PORT_VARIABLES = ("OTESSE_GATEWAY_PORT", "OTESSE_GATEWAY_ADMIN_PORT", "OTESSE_AUTHORIZE_PORT",
                  "OTESSE_TOKEN_HTTP_PORT", "OTESSE_TOKEN_GRPC_PORT", "OTESSE_TOKEN_EDGE_PORT",
                  "OTESSE_REGISTRY_GRPC_PORT", "OTESSE_REGISTRY_HTTP_PORT",
                  "OTESSE_BOOKINGS_PORT")
# Every service of the stack, in the order run-local starts them.
SERVICES = ("registry", "token", "authorize", "gateway", "bookings")
RETRY_WINDOW = 2
CLIENT_RATE = 40
AUTH_FAILURE_RATE = 20
READY_SECONDS = 60.0
STOP_SECONDS = 20.0


def load_run_local() -> ModuleType:
    """``scripts/run-local`` as a module (it is a Python script without a ``.py`` name)."""
    path = str(ROOT / "scripts" / "run-local")
    loader = importlib.machinery.SourceFileLoader("otesse_run_local", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class ServiceProcesses:
    """The stack's service processes, by name: each started as ``otesse-auth serve <name>``,
    its output appended to ``<logs>/<name>.log``; one may be killed and started again."""

    def __init__(self, services: Sequence[Any], env: dict[str, str], logs: Path, *,
                 otesse_auth: Path, cwd: Path) -> None:
        self._services = {service.name: service for service in services}
        self._env = env
        self._logs = logs
        self._otesse_auth = otesse_auth
        self._cwd = cwd
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with (self._logs / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                service_command(name, self._otesse_auth), env=self._env, cwd=self._cwd,
                stdout=log, stderr=subprocess.STDOUT)

    def ready_url(self, name: str) -> str:
        url: str = self._services[name].ready_url
        return url

    def wait_ready(self, name: str) -> None:
        wait_ready(name, self.ready_url(name), self.running[name], self._logs)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Sends ``sig`` and waits for the exit; returns the exit status (``-sig``)."""
        process = self.running[name]
        process.send_signal(sig)
        return process.wait(timeout=STOP_SECONDS)

    def stop(self) -> dict[str, int | None]:
        return _stop(self.running)


@dataclass(frozen=True)
class Stack:
    """Where the running stack answers."""

    # The public entry and issuer, ``http://localhost:<port>``.
    gateway: str
    # The example resource server, ``http://127.0.0.1:<port>``.
    bookings: str
    token_grpc: str
    registry_grpc: str
    env: dict[str, str]
    logs: Path
    # The service processes (None for a stack this module did not start).
    processes: ServiceProcesses | None = field(default=None, repr=False, compare=False)

    @property
    def issuer(self) -> str:
        return self.gateway

    def log_text(self, service: str) -> str:
        return (self.logs / f"{service}.log").read_text(errors="replace")


def stack_env(test_env: dict[str, str], logs: Path) -> dict[str, str]:
    """This run's stores, free ports, and the test settings named in the module docstring."""
    # Services import only what the environment running them installed.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("OTESSE_") and key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(test_env)
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    env.update({
        "PYTHONUNBUFFERED": "1",
        "OTESSE_RUN_DIR": str(logs),
        "OTESSE_ISSUER": f"http://localhost:{env['OTESSE_GATEWAY_PORT']}",
        "OTESSE_GATEWAY_ALLOWED_HOSTS": "localhost",
        "OTESSE_GATEWAY_RATE_LOGIN_PER_IP": "off",
        "OTESSE_GATEWAY_RATE_TOKEN_PER_IP": "off",
        "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": f"{AUTH_FAILURE_RATE}/60",
        "OTESSE_TOKEN_RATE_PER_CLIENT": f"{CLIENT_RATE}/60",
        "OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS": str(RETRY_WINDOW),
    })
    return env


def service_command(service: str, otesse_auth: Path = OTESSE_AUTH) -> list[str]:
    command = [str(otesse_auth), "serve", service]
    # A test run that is killed must not leave services behind: setpriv (util-linux) asks the
    # kernel to send SIGTERM when this process dies (a preexec_fn could deadlock in a process
    # with threads, and gRPC has some).
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def wait_ready(name: str, url: str, process: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n"
                                   + (logs / f"{name}.log").read_text(errors="replace")[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"{name} was not ready after {READY_SECONDS:.0f} s ({url})")


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | None]:
    """SIGTERM to each (the public entry first), then their exit codes (None: killed)."""
    for process in reversed(list(processes.values())):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    deadline = time.monotonic() + STOP_SECONDS
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            codes[name] = None
    return codes


@contextlib.contextmanager
def running_stack(test_env: dict[str, str], logs: Path, *, otesse_auth: Path = OTESSE_AUTH,
                  cwd: Path = ROOT, settings: Mapping[str, str] | None = None,
                  ) -> Iterator[Stack]:
    """Starts every service, yields the stack, stops them; raises if any did not exit 0.

    ``otesse_auth`` is the console script that serves them (by default the checkout's
    editable install), run in ``cwd``; ``settings`` override the test settings above."""
    env = stack_env(test_env, logs)
    env.update(settings or {})
    services = load_run_local().plan(env)
    assert tuple(service.name for service in services) == SERVICES
    processes = ServiceProcesses(services, env, logs, otesse_auth=otesse_auth, cwd=cwd)
    codes: dict[str, int | None] = {}
    try:
        for service in services:
            processes.start(service.name)
        for service in services:
            processes.wait_ready(service.name)
        yield Stack(gateway=env["OTESSE_ISSUER"],
                    bookings=f"http://127.0.0.1:{env['OTESSE_BOOKINGS_PORT']}",
                    token_grpc=env["OTESSE_TOKEN_GRPC_ADDR"],
                    registry_grpc=env["OTESSE_REGISTRY_ADDR"], env=env, logs=logs,
                    processes=processes)
    finally:
        codes = processes.stop()
    failed = {name: code for name, code in codes.items() if code != 0}
    # DESIGN §7: SIGTERM stops accepting, finishes in-flight requests and exits cleanly.
    assert not failed, f"services did not exit 0 on SIGTERM: {failed} (logs in {logs})"
