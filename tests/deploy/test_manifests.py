"""The Kubernetes manifests: valid for a fixed Kubernetes version (offline, strict), and what an
operator relies on — probes, resources, non-root read-only pods, one pinned image, real settings,
drain timings that fit the grace period, gRPC through headless Services, an Ingress that sends
the token service's public paths to its edge port and the rest to the gateway, and network
policies that let exactly the documented callers in.

Most checks read the manifests as ``kubectl apply -k`` renders them (:func:`rendered`: the
kustomization's resources, its namespace and its image override applied)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from services.common.grpc_server import (
    MAX_CONNECTION_AGE_GRACE_SECONDS,
    MAX_CONNECTION_AGE_SECONDS,
    STOP_GRACE_SECONDS,
)
from services.common.serve import GRACEFUL_SECONDS
from services.gateway import routing
from services.gateway.routing import TOKEN_PATHS, WELL_KNOWN_PREFIX
from services.gateway.upstream_client import KEEPALIVE_EXPIRY

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
IMAGE = re.compile(r"^ghcr\.io/otesse/otesse-auth:[0-9][\w.-]*$")
SERVICES = ("gateway", "authorize", "token", "registry")
NAMESPACE = "otesse-auth"
# gRPC is reached through headless Services only (per-call balancing over every pod).
GRPC_SERVICES = {"token-grpc": ("token", 50052, "OTESSE_TOKEN_GRPC_ADDR"),
                 "registry-grpc": ("registry", 50051, "OTESSE_REGISTRY_ADDR")}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


DOCUMENTS = _documents()


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] == kind}


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = [(name, doc["spec"]["template"]["spec"])
             for name, doc in {**_of_kind("Deployment"), **_of_kind("Job")}.items()]
    specs += [(name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
              for name, doc in _of_kind("CronJob").items()]
    return specs


def settings_names() -> set[str]:
    """Every ``OTESSE_…`` variable some service or the CLI reads."""
    names: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        names.update(re.findall(r"\"(OTESSE_[A-Z0-9_]+)\"", path.read_text()))
    return names


@pytest.mark.parametrize(("source", "document"), DOCUMENTS,
                         ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}"
                              for name, doc in DOCUMENTS])
def test_manifest_validates_strictly(source: str, document: dict[str, Any]) -> None:
    # Raises on an unknown field, a wrong type, or a kind the schemas do not know.
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == "otesse-auth"
    assert all(doc["metadata"].get("namespace") == "otesse-auth"
               for _, doc in DOCUMENTS if doc["kind"] != "Namespace")


def test_each_service_has_its_deployment_service_hpa_and_pdb() -> None:
    for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert set(_of_kind(kind)) == set(SERVICES), kind
    # HTTP through plain Services (the gateway's one the Ingress uses), gRPC through headless.
    assert set(_of_kind("Service")) == {"gateway", "authorize", "token", *GRPC_SERVICES}
    for name, hpa in _of_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["minReplicas"] >= 2
    for name, pdb in _of_kind("PodDisruptionBudget").items():
        labels = _of_kind("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_has_probes_resources_and_a_drain(name: str) -> None:
    spec = _of_kind("Deployment")[name]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["serve", name]
    assert {"readinessProbe", "livenessProbe"} <= container.keys()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    readiness = container["readinessProbe"]
    if name == "registry":
        assert readiness["grpc"]["port"] == 50051  # the standard gRPC health service
    else:
        assert readiness["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert spec["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"][
        "seconds"]
    port_names = {port["name"] for port in container.get("ports", [])}
    for probe in (container["livenessProbe"], readiness):
        port = probe.get("httpGet", probe.get("grpc", {}))["port"]
        assert isinstance(port, int) or port in port_names


@pytest.mark.parametrize(("name", "spec"), _pod_specs(), ids=[n for n, _ in _pod_specs()])
def test_pods_run_non_root_read_only_without_capabilities(name: str,
                                                          spec: dict[str, Any]) -> None:
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert IMAGE.match(container["image"]), container["image"]
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts  # the only writable place


def test_every_image_is_the_one_image_at_one_tag() -> None:
    images = {c["image"] for _, spec in _pod_specs() for c in spec["containers"]}
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (pinned,) = kustomization["images"]
    assert images == {f"{pinned['name']}:{pinned['newTag']}"}


def test_every_variable_named_is_a_real_setting() -> None:
    known = settings_names()
    named: set[str] = set()
    for kind in ("ConfigMap",):
        for doc in _of_kind(kind).values():
            named.update(doc["data"])
    for doc in _of_kind("Secret").values():
        named.update(doc["stringData"])
    for _, spec in _pod_specs():
        for container in spec["containers"]:
            named.update(env["name"] for env in container.get("env", []))
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    named.add(env["valueFrom"]["secretKeyRef"]["key"])
    assert named and named <= known, sorted(named - known)


def test_secrets_are_placeholders_and_reach_only_who_needs_them() -> None:
    for doc in _of_kind("Secret").values():
        assert all("REPLACE-ME" in value for value in doc["stringData"].values())
    users: dict[str, set[str]] = {}
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    users.setdefault(source["secretRef"]["name"], set()).add(name)
    assert users["otesse-auth-token-kek"] == {"token"}
    # Whoever holds the service-credential key can claim any service's name over gRPC: the
    # three services that call or answer grant and client administration, nothing else.
    assert users["otesse-auth-service-credential"] == {"authorize", "registry", "token"}
    assert "gateway" not in users["otesse-auth-stores"]  # it gets the Redis URL alone


def test_ingress_sends_auth_otesse_com_over_tls_to_the_public_ports_only() -> None:
    (ingress,) = _of_kind("Ingress").values()
    assert ingress["spec"]["tls"][0]["hosts"] == ["auth.otesse.com"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "auth.otesse.com"
    backends = {(path["backend"]["service"]["name"], path["backend"]["service"]["port"]["name"])
                for path in rule["http"]["paths"]}
    # The gateway's public port and the token service's edge: never a port that answers the
    # probes or /metrics (the token service's own HTTP port, the gateway's admin port).
    assert backends == {("gateway", "http"), ("token", "edge")}
    service_ports = _of_kind("Service")["gateway"]["spec"]["ports"]
    assert [port["port"] for port in service_ports] == [8000]  # the admin port is not exposed
    config = _of_kind("ConfigMap")["otesse-auth-config"]["data"]
    assert config["OTESSE_GATEWAY_ALLOWED_HOSTS"] == "auth.otesse.com"
    assert config["OTESSE_ISSUER"] == "https://auth.otesse.com"


def _ingress_paths() -> list[dict[str, Any]]:
    (ingress,) = _of_kind("Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    paths: list[dict[str, Any]] = rule["http"]["paths"]
    return paths


def _ingress_backend(path: str) -> tuple[str, str]:
    """(Service, port name) the Ingress sends a request path to, as the Ingress API defines the
    match: an Exact path matches itself only, a Prefix path every path whose ``/``-separated
    elements start with its own (a trailing ``/`` ignored); the longest match wins, Exact
    before Prefix at equal length."""
    def matches(entry: dict[str, Any]) -> bool:
        if entry["pathType"] == "Exact":
            return bool(path == entry["path"])
        assert entry["pathType"] == "Prefix", entry
        prefix = [element for element in entry["path"].split("/") if element]
        return [element for element in path.split("/") if element][:len(prefix)] == prefix

    found = [entry for entry in _ingress_paths() if matches(entry)]
    assert found, path
    best = max(found, key=lambda entry: (len(entry["path"].rstrip("/")),
                                         entry["pathType"] == "Exact"))
    service = best["backend"]["service"]
    return service["name"], service["port"]["name"]


def test_ingress_token_paths_are_exactly_the_gateways_token_routes() -> None:
    # Read from the gateway's routing table: the two cannot drift apart.
    routes = {(entry["path"], entry["pathType"], entry["backend"]["service"]["name"],
               entry["backend"]["service"]["port"]["name"]) for entry in _ingress_paths()}
    assert routes == {
        *((path, "Exact", "token", "edge") for path in TOKEN_PATHS),
        (WELL_KNOWN_PREFIX, "Prefix", "token", "edge"),
        ("/", "Prefix", "gateway", "http"),
    }


# Request paths of every kind the gateway routes, and some it refuses.
SAMPLE_PATHS = (*sorted(TOKEN_PATHS), WELL_KNOWN_PREFIX + "jwks.json",
                WELL_KNOWN_PREFIX + "openid-configuration", WELL_KNOWN_PREFIX + "a/b",
                "/", "/login", "/logout", "/oauth/authorize", "/oauth/token/extra",
                "/oauth/tokens", "/oauth", "/settings/integrations/oauth-apps/new",
                "/static/otesse.css", "/well-known/jwks.json", "/healthz", "/readyz", "/metrics")


@pytest.mark.parametrize("path", SAMPLE_PATHS)
def test_ingress_sends_a_path_where_the_gateway_would_route_it(path: str) -> None:
    """What the gateway would send to the token service reaches the token edge directly;
    everything else, what the gateway refuses included, reaches the gateway. (``/.well-known``
    itself, without the slash, matches the Prefix rule too: the edge answers it 404, as the
    authorize service does behind the gateway.)"""
    try:
        upstream: str | None = routing.resolve("GET", path).upstream
    except routing.NotRouted:
        upstream = None
    expected = ("token", "edge") if upstream == "token" else ("gateway", "http")
    assert _ingress_backend(path) == expected


def test_migration_job_and_purge_cronjob_run_the_cli() -> None:
    (job,) = _of_kind("Job").values()
    (cronjob,) = _of_kind("CronJob").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    purge = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert purge["args"] == ["purge"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


# -- the manifests as ``kubectl apply -k deploy/kubernetes`` renders them -------------------------

_CLUSTER_SCOPED = {"Namespace"}


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` → (name, tag, digest); a port in the registry host is no tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest or None


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    template = (spec.get("jobTemplate", {}).get("spec", {}).get("template")
                or spec.get("template"))
    if template is None:
        return []
    pod = template["spec"]
    containers: list[dict[str, Any]] = [*pod.get("initContainers", []), *pod["containers"]]
    return containers


def rendered() -> list[dict[str, Any]]:
    """The kustomization's resources with its namespace and ``images`` override applied (what
    kustomize does for the fields this kustomization uses; anything else fails here)."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images"}
    documents = []
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((MANIFESTS / resource).read_text()):
            if document:
                documents.append(document)
    for document in documents:
        if document["kind"] not in _CLUSTER_SCOPED:
            document["metadata"]["namespace"] = kustomization["namespace"]
        for container in _containers(document):
            name, tag, digest = _split_image(container["image"])
            for override in kustomization.get("images", []):
                if override["name"] != name:
                    continue
                name = override.get("newName", name)
                tag = override.get("newTag", tag)
                digest = override.get("digest", digest)
                container["image"] = name + (f":{tag}" if tag else "") + (
                    f"@{digest}" if digest else "")
    return documents


RENDERED = rendered()


def _rendered(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in RENDERED if doc["kind"] == kind}


def _all_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(``kind/name/container``, the container, its pod spec) for every workload."""
    found = []
    for document in RENDERED:
        for container in _containers(document):
            spec = document["spec"]
            pod = (spec["jobTemplate"]["spec"]["template"]["spec"] if "jobTemplate" in spec
                   else spec["template"]["spec"])
            found.append((f"{document['kind']}/{document['metadata']['name']}/"
                          f"{container['name']}", container, pod))
    return found


CONTAINERS = _all_containers()


@pytest.mark.parametrize(("where", "container", "pod"), CONTAINERS,
                         ids=[where for where, _, _ in CONTAINERS])
def test_every_rendered_container_is_bounded_hardened_and_pinned(
        where: str, container: dict[str, Any], pod: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    context = container["securityContext"]
    assert context.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot")) is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    name, tag, digest = _split_image(container["image"])
    assert digest or (tag and tag != "latest"), f"{where}: {container['image']} is not pinned"


@pytest.mark.parametrize("name", SERVICES)
def test_every_rendered_deployment_has_probes_a_pdb_and_an_hpa(name: str) -> None:
    deployment = _rendered("Deployment")[name]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert {"readinessProbe", "livenessProbe"} <= container.keys()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [pdb for pdb in _rendered("PodDisruptionBudget").values()
               if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1
    # One pod at a time, whatever the HPA has scaled to.
    assert budgets[0]["spec"] == {**budgets[0]["spec"], "maxUnavailable": 1}
    scalers = [hpa for hpa in _rendered("HorizontalPodAutoscaler").values()
               if hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1",
                                                   "kind": "Deployment", "name": name}]
    assert len(scalers) == 1 and scalers[0]["spec"]["minReplicas"] >= 2


def _setting(container: dict[str, Any], variable: str) -> str:
    """A container's environment variable, from its ``env`` or the ConfigMaps it loads."""
    for entry in container.get("env", []):
        if entry["name"] == variable:
            value: str = entry["value"]
            return value
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = _rendered("ConfigMap")[source["configMapRef"]["name"]]["data"]
            if variable in data:
                found: str = data[variable]
                return found
    raise AssertionError(f"{container['name']} does not set {variable}")


@pytest.mark.parametrize("name", SERVICES)
def test_drain_timings_fit_in_the_grace_period(name: str) -> None:
    """SIGKILL comes ``terminationGracePeriodSeconds`` after the pod starts terminating; before
    it, the preStop pause, then the drain, the HTTP graceful stop and the gRPC grace must fit."""
    spec = _rendered("Deployment")[name]["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(_setting(container, "OTESSE_SHUTDOWN_DRAIN_SECONDS"))
    serves_grpc = any(port["name"] == "grpc" for port in container["ports"])
    grpc_grace = STOP_GRACE_SECONDS if serves_grpc else 0.0
    assert pod["terminationGracePeriodSeconds"] > pause + drain + GRACEFUL_SECONDS + grpc_grace
    # The gateway's keep-alive connections to a pod (a Service pins them) expire during the
    # drain, which closes each one after an answer: none is left for the stop to close.
    assert drain > KEEPALIVE_EXPIRY
    if serves_grpc:
        # Callers learn a new pod when they resolve the headless Service again, which every
        # closed connection makes them do: before the next old pod goes, all have.
        age = MAX_CONNECTION_AGE_SECONDS * 1.1 + MAX_CONNECTION_AGE_GRACE_SECONDS
        assert spec["minReadySeconds"] >= age


def _port_number(deployment: str, name: str) -> int:
    (container,) = _rendered("Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    (number,) = [port["containerPort"] for port in container["ports"] if port["name"] == name]
    assert isinstance(number, int)
    return number


def test_token_edge_port_is_the_one_the_token_service_listens_on() -> None:
    deployment = _rendered("Deployment")["token"]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    edge = _port_number("token", "edge")
    # The service turns its edge on at the port the Pod declares, on every interface (the
    # default, 127.0.0.1, would refuse the Ingress).
    assert _setting(container, "OTESSE_TOKEN_EDGE_PORT") == str(edge)
    assert _setting(container, "OTESSE_TOKEN_EDGE_HOST") == "0.0.0.0"
    service = _rendered("Service")["token"]["spec"]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    assert {"name": "edge", "port": edge, "targetPort": "edge"} in service["ports"]
    # The probes and the scrape stay on the service's own HTTP port: the edge answers 404 for
    # /healthz, /readyz and /metrics.
    http = _port_number("token", "http")
    assert http != edge
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", http), probe
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(http)


def test_token_edge_has_the_gateways_settings() -> None:
    """The edge is configured by the gateway's OTESSE_GATEWAY_… settings: the token pods get
    every one the gateway's pods get, with the same value (allowed hosts, trusted proxies,
    limits, rate limits), and the Redis the rate limits count in."""
    (gateway,) = _rendered("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    (token,) = _rendered("Deployment")["token"]["spec"]["template"]["spec"]["containers"]
    names = {entry["name"] for entry in gateway.get("env", [])}
    for source in gateway.get("envFrom", []):
        assert "configMapRef" in source, source  # the gateway loads no whole Secret
        names.update(_rendered("ConfigMap")[source["configMapRef"]["name"]]["data"])
    gateway_settings = sorted(name for name in names if name.startswith("OTESSE_GATEWAY_"))
    assert "OTESSE_GATEWAY_TRUSTED_PROXIES" in gateway_settings
    for name in gateway_settings:
        assert _setting(token, name) == _setting(gateway, name), name
    secrets = {source["secretRef"]["name"] for source in token["envFrom"]
               if "secretRef" in source}
    assert "OTESSE_REDIS_URL" in _rendered("Secret")["otesse-auth-stores"]["stringData"]
    assert "otesse-auth-stores" in secrets


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grpc_addresses_name_headless_services_of_the_serving_pods(service: str) -> None:
    deployment_name, port, variable = GRPC_SERVICES[service]
    headless = _rendered("Service")[service]["spec"]
    assert headless["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in headless["ports"]] == [(port, "grpc")]
    deployment = _rendered("Deployment")[deployment_name]
    assert headless["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "grpc", "containerPort": port} in container["ports"]
    config = _rendered("ConfigMap")["otesse-auth-config"]["data"]
    assert config[variable] == f"dns:///{service}.{NAMESPACE}.svc.cluster.local:{port}"
    # No plain Service offers the gRPC port: its one virtual IP would pin callers to a pod.
    for other in _rendered("Service").values():
        if other["spec"].get("clusterIP") != "None":
            assert port not in [p["port"] for p in other["spec"]["ports"]]


# Every connection the network policies allow into the namespace: (from, to, port). "pods X"
# are pods of this namespace named X; "namespace N" any pod of namespace N; "labelled" a pod
# labelled otesse.com/validates-tokens=true in a namespace labelled the same.
INGRESS = "namespace ingress-nginx"
MONITORING = "namespace monitoring"
LABELLED = "labelled resource servers"
ALLOWED = {
    (INGRESS, "gateway", 8000),
    (INGRESS, "token", 8005),
    (MONITORING, "gateway", 8010),
    ("pods gateway", "authorize", 8001),
    (MONITORING, "authorize", 8001),
    ("pods gateway", "token", 8002),
    (MONITORING, "token", 8002),
    ("pods authorize", "token", 50052),
    (LABELLED, "token", 50052),
    ("pods token", "registry", 50051),
    ("pods authorize", "registry", 50051),
    (MONITORING, "registry", 8003),
}
VALIDATES = {"otesse.com/validates-tokens": "true"}


def _peer(peer: dict[str, Any]) -> str:
    """One ``from`` entry as a row of the table; anything broader fails the test."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
    pods = peer.get("podSelector")
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:
        assert pods is not None and set(pods) == {"matchLabels"}, peer
        (label, value), = pods["matchLabels"].items()
        assert label == "app.kubernetes.io/name", peer
        return f"pods {value}"
    assert set(namespaces) == {"matchLabels"} and namespaces["matchLabels"], peer
    if pods is None:
        (label, value), = namespaces["matchLabels"].items()
        assert label == "kubernetes.io/metadata.name", peer
        return f"namespace {value}"
    assert namespaces["matchLabels"] == VALIDATES and pods == {"matchLabels": VALIDATES}, peer
    return LABELLED


def _allowed() -> set[tuple[str, str, int]]:
    """Every (from, to, port) the rendered policies allow, as rows of the table."""
    policies = _rendered("NetworkPolicy")
    deny = policies.pop("default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    allowed: set[tuple[str, str, int]] = set()
    for policy in policies.values():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        (target,) = spec["podSelector"]["matchLabels"].values()
        for rule in spec["ingress"]:
            ports = [port["port"] for port in rule["ports"]]
            assert all(port["protocol"] == "TCP" for port in rule["ports"]) and ports
            for peer in rule["from"]:
                allowed.update((_peer(peer), target, port) for port in ports)
    return allowed


def test_network_policies_allow_exactly_the_table() -> None:
    allowed = _allowed()
    assert allowed == ALLOWED
    # From outside the namespace: the gateway and the token service's edge from the ingress
    # controller, metrics from Prometheus, and the token service's gRPC from labelled resource
    # servers — nothing else.
    outside = {(source, target, port) for source, target, port in allowed
               if not source.startswith("pods ")}
    assert {(target, port) for source, target, port in outside if source != MONITORING} == {
        ("gateway", 8000), ("token", 8005), ("token", 50052)}
    metrics = {name: int(doc["spec"]["template"]["metadata"]["annotations"]
                         ["prometheus.io/port"]) for name, doc in _rendered("Deployment").items()}
    assert {(target, port) for source, target, port in outside if source == MONITORING} == set(
        metrics.items())


def test_the_ingress_controller_reaches_exactly_the_ports_the_ingress_routes_to() -> None:
    routed = set()
    for entry in _ingress_paths():
        backend = entry["backend"]["service"]
        service = _rendered("Service")[backend["name"]]["spec"]
        (port,) = [p for p in service["ports"] if p["name"] == backend["port"]["name"]]
        (deployment,) = [name for name, doc in _rendered("Deployment").items()
                         if service["selector"].items()
                         <= doc["spec"]["template"]["metadata"]["labels"].items()]
        routed.add((deployment, _port_number(deployment, port["targetPort"])))
    assert {(target, port) for source, target, port in _allowed() if source == INGRESS} == routed


BROADER = {
    "fails because any namespace's labelled pod would pass":
        {"namespaceSelector": {}, "podSelector": {"matchLabels": VALIDATES}},
    "fails because a pod label alone is not a namespace":
        {"podSelector": {"matchLabels": VALIDATES}},
    "fails because every pod of a labelled namespace would pass":
        {"namespaceSelector": {"matchLabels": VALIDATES}},
    "fails because an address block is no caller": {"ipBlock": {"cidr": "0.0.0.0/0"}},
    "fails because every pod of this namespace would pass": {"podSelector": {}},
}


@pytest.mark.parametrize("peer", BROADER.values(), ids=BROADER.keys())
def test_a_broader_peer_is_not_in_the_table(peer: dict[str, Any]) -> None:
    # The table check above fails on any of these rather than reading them as allowed callers.
    with pytest.raises(AssertionError):
        _peer(peer)
