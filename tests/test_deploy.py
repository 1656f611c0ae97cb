"""deploy/: the Kubernetes manifests validate against Kubernetes' schemas (offline), hang
together (probes, Services, budgets, the autoscaler, the Secret), and carry the Envoy
configuration the code renders for the in-cluster addresses."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helpers.envoy import assert_envoy_accepts

from edge.envoy import ROOT, render
from services.kubernetes import ENVOY_CONFIG_FILE, IN_CLUSTER, MANIFESTS

KUBERNETES_VERSION = "1.33.0"
SERVICES = ("registry", "billing", "router")
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


def container(name: str) -> dict:
    (only,) = find("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return only


def environment(name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(name).get("env", []) if "value" in e}


@pytest.mark.parametrize("document", [*DOCUMENTS, SECRET], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_strictly(document: dict) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_names_files_that_exist() -> None:
    files = [*KUSTOMIZATION["resources"]]
    for generator in KUSTOMIZATION["configMapGenerator"]:
        files += [entry.split("=", 1)[-1] for entry in generator["files"]]
    assert [f for f in files if not (MANIFESTS / f).is_file()] == []
    assert sorted(d["kind"] for d in DOCUMENTS).count("Deployment") == 4


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
    annotations = find("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
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


@pytest.mark.parametrize("name", [*SERVICES, "envoy"])
def test_each_part_has_a_disruption_budget_that_selects_it(name: str) -> None:
    budget = find("PodDisruptionBudget", name)["spec"]
    labels = find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert find("Deployment", name)["spec"]["replicas"] == 2  # a budget of one leaves one serving


def test_the_router_scales_horizontally() -> None:
    autoscaler = find("HorizontalPodAutoscaler", "router")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "router"}
    assert autoscaler["minReplicas"] == 2


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
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    copied = [word for line in re.findall(r"^COPY (.+) \S+$", containerfile, re.MULTILINE) for word in line.split()]
    assert [path for path in copied if not (ROOT / path).exists()] == []
    # every package the install finds is in the image: its own directory, or gen/ (copied) holding it
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in find["include"]]
    assert "gen" in copied
    assert [name for name in packages if name not in copied and not (ROOT / "gen" / name).is_dir()] == []
    assert "pip install --no-cache-dir -c constraints.txt -e '.[postgres]'" in containerfile
    assert f"WORKDIR {IN_CLUSTER.files_root}" in containerfile
