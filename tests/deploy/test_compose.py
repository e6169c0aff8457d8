"""docker-compose.yml and the Dockerfile, checked structurally (no container is started;
``make test-containers`` runs them for real)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from services.cli.serve import SERVICES as SERVABLE
from tests.deploy.test_manifests import settings_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
# ${NAME:-default}, the only interpolation the file uses (Compose v2 and docker-compose 1.29).
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")
COMPOSE: dict[str, Any] = yaml.safe_load(_VARIABLE.sub(lambda m: m.group(2), COMPOSE_TEXT))
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The README's default ports (DESIGN §7): what each service listens on.
DEFAULT_PORTS = {"gateway": 8000, "authorize": 8001, "token": 8002, "registry": 50051,
                 "bookings": 8100}
APP_SERVICES = ("registry", "token", "authorize", "gateway", "bookings")


def test_compose_runs_every_service_from_one_image() -> None:
    services = COMPOSE["services"]
    assert {"postgres", "redis", "migrate", *APP_SERVICES} == set(services)
    for name in APP_SERVICES:
        assert services[name]["command"] == ["serve", name]
        assert name in SERVABLE
    assert services["migrate"]["command"] == ["migrate"]
    images = {services[name]["image"] for name in (*APP_SERVICES, "migrate")}
    assert images == {"otesse-auth:local"}


def test_compose_dependencies_exist_and_wait_for_migrations() -> None:
    services = COMPOSE["services"]
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on missing {target}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("registry", "token", "authorize"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    assert set(services["gateway"]["depends_on"]) >= {"authorize", "token"}
    # Compose stops a service after its dependents: the stores must outlive every service
    # that drains into them.
    for name in ("registry", "token", "authorize"):
        assert set(services[name]["depends_on"]) >= {"postgres", "redis"}, name


def test_compose_publishes_only_the_public_entries_on_loopback_default_ports() -> None:
    published = {name: service["ports"] for name, service in COMPOSE["services"].items()
                 if "ports" in service}
    assert published == {"gateway": ["127.0.0.1:8000:8000"],
                         "bookings": ["127.0.0.1:8100:8100"]}
    environment = {name: service.get("environment", {})
                   for name, service in COMPOSE["services"].items()}
    assert environment["gateway"]["OTESSE_GATEWAY_AUTHORIZE_URL"] == (
        f"http://authorize:{DEFAULT_PORTS['authorize']}")
    assert environment["gateway"]["OTESSE_GATEWAY_TOKEN_URL"] == (
        f"http://token:{DEFAULT_PORTS['token']}")
    assert environment["token"]["OTESSE_REGISTRY_ADDR"] == (
        f"registry:{DEFAULT_PORTS['registry']}")
    assert environment["bookings"]["OTESSE_TOKEN_GRPC_ADDR"] == "token:50052"
    assert environment["gateway"]["OTESSE_ISSUER"] == "http://localhost:8000"


def test_compose_token_edge_is_on_at_the_kubernetes_port_but_not_published() -> None:
    token = COMPOSE["services"]["token"]
    environment = token["environment"]
    # The port the Kubernetes manifests give the token container's edge.
    manifest = (ROOT / "deploy" / "kubernetes" / "token.yaml").read_text()
    deployment = next(doc for doc in yaml.safe_load_all(manifest)
                      if doc and doc["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (edge,) = [p["containerPort"] for p in container["ports"] if p["name"] == "edge"]
    assert environment["OTESSE_TOKEN_EDGE_PORT"] == str(edge)
    assert environment["OTESSE_TOKEN_EDGE_HOST"] == "0.0.0.0"
    # The edge's Host check (the gateway's settings) lets in what is sent from inside the
    # container (tests/containers: http://127.0.0.1:<edge>/…).
    assert {"localhost", "127.0.0.1"} <= set(
        environment["OTESSE_GATEWAY_ALLOWED_HOSTS"].split(","))
    assert "ports" not in token  # the gateway stays the published entry


def test_compose_variables_are_real_settings() -> None:
    known = settings_names()
    named = {key for service in COMPOSE["services"].values()
             for key in service.get("environment", {}) if key.startswith("OTESSE_")}
    named |= set(re.findall(r"\b(OTESSE_[A-Z0-9_]+)=", DOCKERFILE))
    assert named and named <= known, sorted(named - known)


def test_compose_containers_are_locked_down() -> None:
    for name in (*APP_SERVICES, "migrate"):
        service = COMPOSE["services"][name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "/tmp" in service["tmpfs"]


def test_dockerfile_installs_the_lock_with_hashes_and_runs_as_non_root() -> None:
    # The base is a build argument (a stand-in where no registry answers), the official
    # python:3.11-slim by default, the same for both stages.
    assert re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M) == ["python:3.11-slim"]
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(stages) == 2 and set(stages) == {"${BASE_IMAGE}"}
    assert "--require-hashes" in DOCKERFILE and "runtime.lock" in DOCKERFILE
    # With a wheelhouse in the context the install reads nothing else.
    assert "--no-index --find-links deploy/docker/wheelhouse" in DOCKERFILE
    final = DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r'^ENTRYPOINT \["otesse-auth"\]$', DOCKERFILE, re.M)
    assert re.search(r'^CMD \["serve", "gateway"\]$', DOCKERFILE, re.M)
    # .dockerignore excludes everything, then lets in exactly what the build copies.
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for source in copied.split():
            assert any(source.rstrip("/") == a or source.startswith(f"{a}/")
                       for a in allowed), source


def test_compose_works_with_docker_compose_1_29() -> None:
    # docker-compose 1.29 (Debian's) refuses a top-level `name:`; the project comes from -p or
    # COMPOSE_PROJECT_NAME.
    assert set(COMPOSE) == {"x-otesse", "services", "networks", "volumes"}
    for name in (*APP_SERVICES, "migrate"):
        condition = COMPOSE["services"][name].get("depends_on", {})
        assert all(set(rule) == {"condition"} for rule in condition.values())


def test_compose_moves_ports_images_and_subnet_together() -> None:
    variables = dict(_VARIABLE.findall(COMPOSE_TEXT))
    assert variables == {
        "OTESSE_IMAGE": "otesse-auth:local", "OTESSE_BASE_IMAGE": "python:3.11-slim",
        "OTESSE_POSTGRES_IMAGE": "postgres:16-alpine", "OTESSE_REDIS_IMAGE": "redis:7-alpine",
        "OTESSE_COMPOSE_GATEWAY_PORT": "8000", "OTESSE_COMPOSE_BOOKINGS_PORT": "8100",
        "OTESSE_COMPOSE_SUBNET": "172.30.0.0/24"}
    # Every ${NAME} has its default: nothing depends on the caller's environment.
    assert "${" not in _VARIABLE.sub("", COMPOSE_TEXT)
    raw: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
    gateway = raw["services"]["gateway"]
    # The issuer is the published gateway, wherever it is published.
    assert gateway["ports"] == ["127.0.0.1:${OTESSE_COMPOSE_GATEWAY_PORT:-8000}:8000"]
    assert gateway["environment"]["OTESSE_ISSUER"] == (
        "http://localhost:${OTESSE_COMPOSE_GATEWAY_PORT:-8000}")
    # The authorize service believes X-Forwarded-For from its network only, wherever it is.
    subnet = raw["networks"]["otesse"]["ipam"]["config"][0]["subnet"]
    assert raw["services"]["authorize"]["environment"][
        "OTESSE_AUTHORIZE_TRUSTED_PROXIES"] == subnet == "${OTESSE_COMPOSE_SUBNET:-172.30.0.0/24}"


@pytest.fixture(scope="module")
def runtime_lock() -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "runtime-requirements.py"),
         str(ROOT / "requirements.lock"), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, check=True)
    return result.stdout


def _pinned(lock: str) -> set[str]:
    return {re.sub(r"[-_.]+", "-", m).lower()
            for m in re.findall(r"^([A-Za-z0-9][\w.-]*)==", lock, re.M)}


def test_runtime_lock_holds_every_runtime_dependency_and_no_dev_tool(runtime_lock: str) -> None:
    pinned = _pinned(runtime_lock)
    # Walk the real dependency tree of what is installed, from the project's own requirements.
    todo = [Requirement(r) for r in metadata.requires("otesse-auth") or []
            if "extra ==" not in r]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        seen.add(name)
        for extra in requirement.extras or {""}:
            for text in metadata.requires(requirement.name) or []:
                child = Requirement(text)
                if child.marker is None or child.marker.evaluate({"extra": extra}):
                    todo.append(child)
    assert seen <= pinned, sorted(seen - pinned)
    assert not pinned & {"pytest", "mypy", "ruff", "playwright", "authlib", "grpcio-tools"}
    assert all("--hash=sha256:" in block for block in runtime_lock.split("==")[1:])
