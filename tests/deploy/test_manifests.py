"""The Kubernetes manifests: valid for a fixed Kubernetes version (offline, strict), and what an
operator relies on — probes, resources, non-root read-only pods, one image, real settings,
network policies that let exactly the documented callers in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
IMAGE = re.compile(r"^ghcr\.io/otesse/otesse-auth:[0-9][\w.-]*$")
SERVICES = ("gateway", "authorize", "token", "registry")


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
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert set(_of_kind(kind)) == set(SERVICES), kind
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
    assert "gateway" not in users["otesse-auth-stores"]  # it gets the Redis URL alone


def test_ingress_sends_auth_otesse_com_over_tls_to_the_gateway_only() -> None:
    (ingress,) = _of_kind("Ingress").values()
    assert ingress["spec"]["tls"][0]["hosts"] == ["auth.otesse.com"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "auth.otesse.com"
    backends = {path["backend"]["service"]["name"] for path in rule["http"]["paths"]}
    assert backends == {"gateway"}
    service_ports = _of_kind("Service")["gateway"]["spec"]["ports"]
    assert [port["port"] for port in service_ports] == [8000]  # the admin port is not exposed
    config = _of_kind("ConfigMap")["otesse-auth-config"]["data"]
    assert config["OTESSE_GATEWAY_ALLOWED_HOSTS"] == "auth.otesse.com"
    assert config["OTESSE_ISSUER"] == "https://auth.otesse.com"


def _allowed(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"].get("ingress", [])
            if any(p["port"] == port for p in rule["ports"]) for peer in rule["from"]]


def _pods(peers: list[dict[str, Any]]) -> set[str]:
    return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in peers
            if "podSelector" in peer and "namespaceSelector" not in peer}


def test_network_policies_let_in_only_the_documented_callers() -> None:
    policies = _of_kind("NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
    gateway_public = _allowed(policies["gateway"], 8000)
    assert gateway_public == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert _pods(_allowed(policies["authorize"], 8001)) == {"gateway"}
    assert _pods(_allowed(policies["token"], 8002)) == {"gateway"}
    assert _pods(_allowed(policies["token"], 50052)) == {"authorize"}
    assert _pods(_allowed(policies["registry"], 50051)) == {"token", "authorize"}
    assert all("namespaceSelector" not in peer for peer in _allowed(policies["registry"], 50051))
    # The internal services are never reachable from the ingress controller's namespace.
    for name in ("authorize", "token", "registry"):
        for rule in policies[name]["spec"]["ingress"]:
            for peer in rule["from"]:
                labels = peer.get("namespaceSelector", {}).get("matchLabels", {})
                assert labels.get("kubernetes.io/metadata.name") != "ingress-nginx"


def test_migration_job_and_purge_cronjob_run_the_cli() -> None:
    (job,) = _of_kind("Job").values()
    (cronjob,) = _of_kind("CronJob").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    purge = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert purge["args"] == ["purge"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
