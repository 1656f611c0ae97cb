"""The Envoy configuration of the Kubernetes manifests (deploy/kubernetes/base/): the
in-cluster addresses in one place. `switchboard render-envoy` writes it (the kustomization
turns the file into the envoy-config ConfigMap); tests/test_deploy.py checks the committed
copy equals what this renders."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from edge.envoy import ROOT, EnvoyPorts, render

MANIFESTS = ROOT / "deploy" / "kubernetes" / "base"
ENVOY_CONFIG_FILE = MANIFESTS / "envoy.rendered.yaml"
IMAGE_ROOT = Path("/app")  # where deploy/Containerfile puts the source tree (envoy/, gen/, console/)

# Each service's headless Service: its name resolves to every ready replica (Envoy's STRICT_DNS).
IN_CLUSTER = EnvoyPorts(
    http_port=8080,
    admin_port=9901,
    listen_address="0.0.0.0",
    files_root=IMAGE_ROOT,
    backends={"registry": [("registry", 50051)], "billing": [("billing", 50053)], "router": [("router", 50052)]},
)


def add_render_envoy_command(commands: argparse._SubParsersAction) -> None:
    """`switchboard render-envoy`: writes the ConfigMap's file (or a config for other addresses)."""
    parser = commands.add_parser(
        "render-envoy", help="write the Envoy configuration of the Kubernetes manifests (or for other addresses)"
    )
    parser.add_argument(
        "--output", type=Path, default=ENVOY_CONFIG_FILE, help="file to write, - for stdout (default: %(default)s)"
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help="where a service is instead of its in-cluster Service (repeatable)",
    )
    parser.add_argument(
        "--files-root", type=Path, default=IN_CLUSTER.files_root, help="where Envoy finds envoy/, gen/ and console/"
    )


def render_envoy(args: argparse.Namespace) -> None:
    """Writes the in-cluster Envoy configuration, with the given backends instead."""
    backends = dict(IN_CLUSTER.backends)
    for item in args.backend:
        service, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        if service not in backends or not host or not port.isdigit():
            sys.exit(f"switchboard: --backend {item!r}: expected one of {', '.join(backends)}=HOST:PORT")
        backends[service] = [(host, int(port))]
    config = render(replace(IN_CLUSTER, backends=backends, files_root=args.files_root))
    if str(args.output) == "-":
        sys.stdout.write(config)
    else:
        args.output.write_text(config)
