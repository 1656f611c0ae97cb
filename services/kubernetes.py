"""The Envoy configuration of the Kubernetes manifests (deploy/kubernetes/base/): the
in-cluster addresses in one place. `switchboard render-envoy` writes it (the kustomization
turns the file into the envoy-config ConfigMap); tests/test_deploy.py checks the committed
copy equals what this renders."""

from __future__ import annotations

from pathlib import Path

from services.common.envoy import ROOT, EnvoyPorts

MANIFESTS = ROOT / "deploy" / "kubernetes" / "base"
ENVOY_CONFIG_FILE = MANIFESTS / "envoy.rendered.yaml"
IMAGE_ROOT = Path("/app")  # where deploy/Containerfile puts the source tree (envoy/, gen/)

# Each service's headless Service: its name resolves to every ready replica (Envoy's STRICT_DNS).
IN_CLUSTER = EnvoyPorts(
    http_port=8080,
    admin_port=9901,
    listen_address="0.0.0.0",
    files_root=IMAGE_ROOT,
    backends={"registry": [("registry", 50051)], "billing": [("billing", 50053)], "router": [("router", 50052)]},
)
