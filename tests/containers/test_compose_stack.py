"""docker-compose.yml, running: the README walkthrough and every page against the published
gateway, the token service's edge, and the promises the image makes — non-root, a read-only
root filesystem with only ``/tmp`` writable, no build tools, a database that wants its
password."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import httpx
import pytest

from tests.containers.conftest import APP_SERVICES, Compose, docker
from tests.integration.people import Person
from tests.integration.stack import Stack
from tests.integration.walkthrough import Walkthrough, walk_through
from tests.packaging.site import Visit, tour

PASSWORD = "a long container passphrase"
# The image's user (Dockerfile: USER 10001:10001).
OTESSE_UID = 10001
# Compilers, linkers, make, and pip with what it builds with: none may be in the final image.
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "cpp", "clang", "ld", "as", "make", "pip", "pip3")
BUILD_PACKAGES = ("gcc", "g++", "cpp", "make", "binutils", "libc6-dev", "build-essential",
                  "python3-pip", "python3-dev")
BUILD_MODULES = ("pip", "setuptools", "wheel")
# The token service's public listener (docker-compose.yml: OTESSE_TOKEN_EDGE_PORT).
TOKEN_EDGE_PORT = 8005
# Run with the image's python (it has no curl): prints the status and the header fields of a GET
# of argv[1], an error status included.
FETCH = """
import json, sys, urllib.error, urllib.request
try:
    answer = urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError as error:
    answer = error
print(json.dumps({"status": answer.status,
                  "headers": {k.lower(): v for k, v in answer.headers.items()}}))
"""


def person(compose: Compose) -> Person:
    """A user created with the operator CLI inside the token container."""
    email = f"containers-{secrets.token_hex(5)}@example.com"
    compose.exec("token", "otesse-auth", "users", "create", "--email", email,
                 "--password", PASSWORD)
    return Person("", email, PASSWORD)


async def test_the_readme_walkthrough_against_the_published_gateway(
        compose: Compose, tmp_path: Path) -> None:
    stack = Stack(gateway=compose.gateway, bookings=compose.bookings, token_grpc="",
                  registry_grpc="", env=dict(os.environ), logs=tmp_path)
    cli = f"docker exec --interactive {compose.containers['token']} otesse-auth"
    await walk_through(Walkthrough(stack, cli=cli), person(compose))


async def test_every_page_and_asset_through_the_published_gateway(compose: Compose) -> None:
    someone = person(compose)
    async with httpx.AsyncClient(base_url=compose.gateway, timeout=10.0) as http:
        visit = Visit(http)
        toured = await tour(visit, email=someone.email, password=someone.password)
        bookings = await http.get(f"{compose.bookings}/v1/bookings", headers={
            "Authorization": f"Bearer {toured.tokens['access_token']}"})
    assert bookings.status_code == 200, bookings.text
    assert {"/static/otesse.css", "/static/copy.js"} <= set(visit.assets)


def fetch_inside(compose: Compose, service: str, url: str) -> tuple[int, dict[str, str]]:
    """A GET of ``url`` from inside the service's container: (status, header fields)."""
    answer = json.loads(compose.exec(service, "python", "-c", FETCH, url).stdout)
    return answer["status"], answer["headers"]


def test_the_token_container_serves_its_edge(compose: Compose) -> None:
    edge = f"http://127.0.0.1:{TOKEN_EDGE_PORT}"
    status, headers = fetch_inside(compose, "token", f"{edge}/.well-known/jwks.json")
    assert status == 200, headers
    # The gateway's edge answered, in the token process: its security fields and request id.
    assert headers["x-content-type-options"] == "nosniff"
    assert headers.get("x-request-id")
    # The admin paths are never on the public listener (the service's own port has them).
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _ = fetch_inside(compose, "token", f"{edge}{path}")
        assert status == 404, path
    status, _ = fetch_inside(compose, "token", "http://127.0.0.1:8002/metrics")
    assert status == 200


@pytest.mark.parametrize("service", [*APP_SERVICES, "migrate"])
def test_the_service_runs_as_the_image_user_not_root(compose: Compose, service: str) -> None:
    container = compose.containers[service]
    user = docker("inspect", "--format", "{{.Config.User}}", container).stdout.strip()
    assert user == f"{OTESSE_UID}:{OTESSE_UID}"
    if service == "migrate":
        return  # it has done its work and exited
    # `docker top` needs the pid column to pick the container's processes out of ps.
    processes = docker("top", container, "-eo", "pid,uid,gid,args").stdout.splitlines()[1:]
    assert processes
    for line in processes:
        _, uid, gid, _ = line.split(maxsplit=3)
        assert (int(uid), int(gid)) == (OTESSE_UID, OTESSE_UID), line


@pytest.mark.parametrize("service", APP_SERVICES)
def test_the_root_filesystem_is_read_only_but_tmp(compose: Compose, service: str) -> None:
    container = compose.containers[service]
    assert docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}",
                  container).stdout.strip() == "true"
    # As root, so that only the read-only mount can refuse (not file permissions).
    for path in ("/probe", "/etc/probe", "/opt/otesse/probe", "/var/probe"):
        refused = compose.exec(service, "sh", "-c", f"echo x > {path}", user="0", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, path
    written = compose.exec(service, "sh", "-c", "echo ok > /tmp/probe && cat /tmp/probe "
                           "&& rm /tmp/probe")
    assert written.stdout.strip() == "ok"


def test_no_build_tools_in_the_image(compose: Compose) -> None:
    tools = f"""
        for tool in {' '.join(BUILD_TOOLS)}; do command -v "$tool" || true; done
        if command -v dpkg-query >/dev/null; then
            dpkg-query --show --showformat '${{Package}} ${{db:Status-Status}}\\n' \\
                {' '.join(BUILD_PACKAGES)} 2>/dev/null | grep ' installed$' || true
        fi
    """
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", compose.image,
                   "-c", tools).stdout.split()
    modules = ("import importlib.util\n"
               f"print(*(m for m in {BUILD_MODULES!r} if importlib.util.find_spec(m)))")
    found += docker("run", "--rm", "--network", "none", "--entrypoint", "python",
                    compose.image, "-c", modules).stdout.split()
    assert found == [], f"build tools in {compose.image}: {found}"


def test_the_database_wants_its_password_over_tcp(compose: Compose) -> None:
    query = ["psql", "--host=127.0.0.1", "--username=otesse", "--dbname=otesse",
             "--no-password", "--tuples-only", "--command=SELECT 1"]
    right = compose.exec("postgres", "env", "PGPASSWORD=otesse-dev-only", *query)
    assert right.stdout.strip() == "1"
    wrong = compose.exec("postgres", "env", "PGPASSWORD=not-the-password", *query, check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
