"""deploy/: the Kubernetes manifests validate against Kubernetes' schemas (offline), hang
together (probes, Services, selectors, budgets, the autoscaler, the Secret), keep what must outlive
a pod (the Router's ledger spool) on volumes that do, and carry the Envoy configuration the code
renders for the in-cluster addresses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml
from helpers.envoy import assert_envoy_accepts

from edge.envoy import ROOT, render
from services.common.secrets import SECRETS_KEY_ENV
from services.kubernetes import ENVOY_CONFIG_FILE, IN_CLUSTER, MANIFESTS

KUBERNETES_VERSION = "1.33.0"
SERVICES = ("registry", "billing", "router")
PARTS = (*SERVICES, "envoy")
WORKLOADS = ("Deployment", "StatefulSet")
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
SPOOL_DIRECTORY = "router-ledger-spool"  # under the Router's data directory (services/router/server.py)
# The settings whose value a service would otherwise create (and keep) in its data directory.
KEPT_IN_DATA_DIRECTORY_UNLESS_SET = {
    "registry": {"SWITCHBOARD_DATABASE_URL", SECRETS_KEY_ENV, "SWITCHBOARD_SERVICE_CREDENTIAL"},
    "billing": {"SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_SERVICE_CREDENTIAL"},
}
KUSTOMIZATION = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
DOCUMENTS = [
    document
    for resource in KUSTOMIZATION["resources"]
    for document in yaml.safe_load_all((MANIFESTS / resource).read_text())
]
SECRET = yaml.safe_load((MANIFESTS / "secret.example.yaml").read_text())


def find(kind: str, name: str) -> dict:
    (found,) = [d for d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def workload(name: str) -> dict:
    """The Deployment or StatefulSet that runs a part."""
    (found,) = [d for d in DOCUMENTS if d["kind"] in WORKLOADS and d["metadata"]["name"] == name]
    return found


def pod(name: str) -> dict:
    return workload(name)["spec"]["template"]["spec"]


def container(name: str) -> dict:
    (only,) = pod(name)["containers"]
    return only


def environment(name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(name).get("env", []) if "value" in e}


def data_directory(name: str) -> PurePosixPath:
    """The service's SWITCHBOARD_DATA_DIR: its own setting, else the image's (deploy/Containerfile)."""
    image_default = re.search(r"\bSWITCHBOARD_DATA_DIR=(\S+)", CONTAINERFILE.read_text())
    return PurePosixPath(environment(name).get("SWITCHBOARD_DATA_DIR") or image_default[1])


def volume_holding(name: str, path: PurePosixPath) -> str:
    """The volume a path of the service's container is on: the deepest mount above it."""
    mounts = [m for m in container(name)["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on the read-only root filesystem"
    return max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))["name"]


def pod_volume(name: str, volume: str) -> dict | None:
    """The pod's own volume of that name (gone with the pod unless it names a claim); None for a
    StatefulSet's per-replica claim."""
    return next((v for v in pod(name).get("volumes", []) if v["name"] == volume), None)


@pytest.mark.parametrize("document", [*DOCUMENTS, SECRET], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_strictly(document: dict) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_names_files_that_exist() -> None:
    files = [*KUSTOMIZATION["resources"]]
    for generator in KUSTOMIZATION["configMapGenerator"]:
        files += [entry.split("=", 1)[-1] for entry in generator["files"]]
    assert [f for f in files if not (MANIFESTS / f).is_file()] == []
    assert sorted(workload(name)["kind"] for name in PARTS) == ["Deployment"] * 3 + ["StatefulSet"]


@pytest.mark.parametrize("name", SERVICES)
def test_services_have_grpc_probes_on_the_port_they_serve(name: str) -> None:
    port = int(environment(name)["SWITCHBOARD_PORT"])
    spec = container(name)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert spec[probe]["grpc"] == {"port": port}, probe
    assert {"name": "grpc", "containerPort": port} in spec["ports"]
    service = find("Service", name)["spec"]
    assert service["clusterIP"] == "None"  # headless: Envoy resolves every ready replica
    assert service["ports"] == [{"name": "grpc", "port": port, "targetPort": "grpc", "appProtocol": "grpc"}]


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_scraped_on_their_metrics_port(name: str) -> None:
    annotations = workload(name)["spec"]["template"]["metadata"]["annotations"]
    metrics_port = environment(name)["SWITCHBOARD_METRICS_PORT"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": metrics_port,
        "prometheus.io/path": "/metrics",
    }
    assert {"name": "metrics", "containerPort": int(metrics_port)} in container(name)["ports"]


def test_service_addresses_match_the_services() -> None:
    """Each service's address setting names a Service and its port."""
    ports = {name: find("Service", name)["spec"]["ports"][0]["port"] for name in SERVICES}
    expected = {name: f"{name}:{port}" for name, port in ports.items()}
    assert environment("billing")["SWITCHBOARD_REGISTRY_ADDRESS"] == expected["registry"]
    assert environment("router")["SWITCHBOARD_REGISTRY_ADDRESS"] == expected["registry"]
    assert environment("router")["SWITCHBOARD_BILLING_ADDRESS"] == expected["billing"]
    assert IN_CLUSTER.backends == {name: [(name, port)] for name, port in ports.items()}


def test_secrets_come_from_the_documented_secret() -> None:
    references = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for name in SERVICES
        for e in container(name)["env"]
        if "valueFrom" in e
    }
    assert references == {(SECRET["metadata"]["name"], key) for key in SECRET["stringData"]}
    for name in ("registry", "billing"):  # PostgreSQL: an external URL from the Secret
        database = next(e for e in container(name)["env"] if e["name"] == "SWITCHBOARD_DATABASE_URL")
        assert database["valueFrom"]["secretKeyRef"] == {"name": "switchboard", "key": "database-url"}


@pytest.mark.parametrize("name", PARTS)
def test_each_part_has_a_disruption_budget_that_selects_it(name: str) -> None:
    budget = find("PodDisruptionBudget", name)["spec"]
    labels = workload(name)["spec"]["template"]["metadata"]["labels"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert workload(name)["spec"]["replicas"] == 2  # a budget of one leaves one serving


@pytest.mark.parametrize("name", PARTS)
def test_each_part_and_its_service_select_its_pods(name: str) -> None:
    spec = workload(name)["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"] == {"matchLabels": labels}
    assert find("Service", name)["spec"]["selector"] == labels


def test_the_router_scales_horizontally() -> None:
    autoscaler = find("HorizontalPodAutoscaler", "router")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "router"}
    assert autoscaler["minReplicas"] == 2


def test_the_router_ledger_spool_outlives_its_pod() -> None:
    """Records Billing has not acknowledged survive a pod deleted while Billing is away (a drain, a
    rollout, a scale-down): the spool is on a claim of the replica's own, kept when the StatefulSet
    is scaled down or deleted, which the replica of the same ordinal sends on its start."""
    volume = volume_holding("router", data_directory("router") / SPOOL_DIRECTORY)
    assert pod_volume("router", volume) is None, f"the spool is on the pod's {pod_volume('router', volume)}"
    router = workload("router")
    assert router["kind"] == "StatefulSet"
    (claim,) = [t["spec"] for t in router["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == volume]
    assert claim["accessModes"] == ["ReadWriteOnce"]  # one replica's: two Routers never share a spool
    assert claim["resources"]["requests"]["storage"]
    assert router["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_the_router_replicas_are_named_by_their_headless_service() -> None:
    """A StatefulSet's serviceName: the headless Service Envoy resolves to every ready replica."""
    service = find("Service", workload("router")["spec"]["serviceName"])
    assert service["metadata"]["name"] == "router"
    assert service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", KEPT_IN_DATA_DIRECTORY_UNLESS_SET)
def test_an_ephemeral_data_directory_holds_nothing_to_keep(name: str) -> None:
    """A data directory on an emptyDir goes with its pod: the database, secrets key and service
    credential the service would otherwise create there come from the Secret (PostgreSQL)."""
    if "emptyDir" in (pod_volume(name, volume_holding(name, data_directory(name))) or {}):
        from_secret = {e["name"] for e in container(name)["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert KEPT_IN_DATA_DIRECTORY_UNLESS_SET[name] <= from_secret


@pytest.mark.e2e  # runs kubectl's kustomize (offline)
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_base() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    documents = list(yaml.safe_load_all(built.stdout))
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents if d["kind"] != "ConfigMap")
    assert kinds == sorted((d["kind"], d["metadata"]["name"]) for d in DOCUMENTS)
    (router,) = [d for d in documents if d["kind"] == "StatefulSet"]
    assert router["spec"]["volumeClaimTemplates"] == workload("router")["spec"]["volumeClaimTemplates"]


def test_envoy_reads_its_rendered_config_from_the_config_map() -> None:
    (generator,) = KUSTOMIZATION["configMapGenerator"]
    assert generator == {"name": "envoy-config", "files": [f"envoy.yaml={ENVOY_CONFIG_FILE.name}"]}
    pod = find("Deployment", "envoy")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "envoy-config"}}]
    assert container("envoy")["command"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]
    http_port = next(p["containerPort"] for p in container("envoy")["ports"] if p["name"] == "http")
    assert http_port == IN_CLUSTER.http_port


def test_the_config_map_holds_what_the_code_renders() -> None:
    """Fails when envoy.rendered.yaml is stale: regenerate with `switchboard render-envoy`."""
    assert ENVOY_CONFIG_FILE.read_text() == render(IN_CLUSTER), "stale: run `switchboard render-envoy`"
    assert ENVOY_CONFIG_FILE.stat().st_size < 1024 * 1024  # a ConfigMap holds at most 1 MiB


@pytest.mark.e2e  # runs the CLI
def test_render_envoy_writes_the_config_map_file(tmp_path: Path) -> None:
    output = tmp_path / "envoy.yaml"
    command = [sys.executable, "-m", "services.cli", "render-envoy", "--output", str(output)]
    subprocess.run(command, check=True, timeout=120)
    assert output.read_text() == ENVOY_CONFIG_FILE.read_text()
    moved = subprocess.run([*command, "--backend", "router=10.0.0.7:50052"], check=True, timeout=120)
    assert moved.returncode == 0
    assert "{address: 10.0.0.7, port_value: 50052}" in output.read_text()
    refused = subprocess.run([*command, "--backend", "nope=x:1"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == "switchboard: --backend 'nope=x:1': expected one of registry, billing, router=HOST:PORT"
    )


@pytest.mark.e2e  # runs Envoy (its validate mode)
def test_envoy_accepts_the_in_cluster_config(tmp_path: Path) -> None:
    """Envoy's own validation of the in-cluster config (host names, STRICT_DNS clusters), its files
    taken from this checkout instead of the image's /app."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render(replace(IN_CLUSTER, files_root=ROOT)))
    assert_envoy_accepts(config)


def test_the_container_build_copies_what_exists_and_installs_pinned() -> None:
    containerfile = CONTAINERFILE.read_text()
    copied = [word for line in re.findall(r"^COPY (.+) \S+$", containerfile, re.MULTILINE) for word in line.split()]
    assert [path for path in copied if not (ROOT / path).exists()] == []
    # every package the install finds is in the image: its own directory, or gen/ (copied) holding it
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in find["include"]]
    assert "gen" in copied
    assert [name for name in packages if name not in copied and not (ROOT / "gen" / name).is_dir()] == []
    assert "pip install --no-cache-dir -c constraints.txt -e '.[postgres]'" in containerfile
    assert f"WORKDIR {IN_CLUSTER.files_root}" in containerfile
