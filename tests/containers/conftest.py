"""The stack that ``docker-compose.yml`` runs, as ``scripts/test-containers`` started it.

The tests are collected only with ``--compose-project NAME`` (the script passes it): they find
the project's containers by the labels every Compose version sets, and the gateway and bookings
API where they are published on the loopback interface.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest

APP_SERVICES = ("registry", "token", "authorize", "gateway", "bookings")


def docker(*args: str, check: bool = True, timeout: float = 60,
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


@dataclass(frozen=True)
class Compose:
    project: str
    # Compose service name → container id (the migrate container has exited; it is here too).
    containers: dict[str, str]
    image: str
    # The published entries, as a developer reaches them: http://localhost:<port>.
    gateway: str
    bookings: str

    def exec(self, service: str, *command: str, user: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        options = ["--user", user] if user is not None else []
        return docker("exec", *options, self.containers[service], *command, check=check)


def _published(container: str, port: int) -> str:
    # "127.0.0.1:49153" (one line per address it is published on).
    address = docker("port", container, f"{port}/tcp").stdout.split()[0]
    return f"http://localhost:{address.rpartition(':')[2]}"


@pytest.fixture(scope="session")
def compose(request: pytest.FixtureRequest) -> Compose:
    project = str(request.config.getoption("--compose-project"))
    listed = docker("ps", "--all", "--filter", f"label=com.docker.compose.project={project}",
                    "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}').stdout
    containers = {service: container for container, service in
                  (line.split() for line in listed.splitlines())}
    assert {*APP_SERVICES, "migrate", "postgres", "redis"} <= set(containers), containers
    image = docker("inspect", "--format", "{{.Config.Image}}", containers["gateway"]).stdout
    return Compose(project, containers, image.strip(),
                   gateway=_published(containers["gateway"], 8000),
                   bookings=_published(containers["bookings"], 8100))
