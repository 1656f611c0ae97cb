"""The `switchboard` command."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from services.common.envoy import render
from services.kubernetes import ENVOY_CONFIG_FILE, IN_CLUSTER
from services.launcher import UpOptions, up
from services.registry.admin_cli import add_admin_commands, run_admin_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Switchboard inference-provider router")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start Envoy and the three services")
    up_parser.add_argument("--demo", action="store_true", help="also start the reference provider and demo data")
    up_parser.add_argument("--http-port", type=int, default=8080, help="Envoy's port (default 8080)")
    up_parser.add_argument("--host", default="127.0.0.1", help="Envoy's listen address (default 127.0.0.1)")
    up_parser.add_argument("--data-dir", type=Path, default=Path("data"), help="state directory (default ./data)")
    up_parser.add_argument("--database-url", default="", help="SQLAlchemy URL instead of SQLite files")
    up_parser.add_argument("--router-replicas", type=int, default=1, help="Router processes behind Envoy (default 1)")
    render_parser = commands.add_parser(
        "render-envoy", help="write the Envoy configuration of the Kubernetes manifests (or for other addresses)"
    )
    render_parser.add_argument(
        "--output", type=Path, default=ENVOY_CONFIG_FILE, help="file to write, - for stdout (default: %(default)s)"
    )
    render_parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="SERVICE=HOST:PORT",
        help="where a service is instead of its in-cluster Service (repeatable)",
    )
    render_parser.add_argument(
        "--files-root", type=Path, default=IN_CLUSTER.files_root, help="where Envoy finds envoy/ and gen/"
    )
    add_admin_commands(commands)
    return parser


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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        options = UpOptions(
            args.http_port, args.data_dir, args.database_url, args.demo, args.host, args.router_replicas
        )
        sys.exit(up(options))
    if args.command == "render-envoy":
        render_envoy(args)
        return
    run_admin_command(args)


if __name__ == "__main__":
    main()
