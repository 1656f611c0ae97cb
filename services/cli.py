"""The `switchboard` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.demo import ANONYMOUS_ACCOUNT
from services.kubernetes import add_render_envoy_command, render_envoy
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
    up_parser.add_argument(
        "--router-workers",
        "--router-replicas",
        dest="router_workers",
        type=int,
        default=None,
        help="Router processes behind Envoy, each with its own spool and metrics (default: one per core "
        f"when {COUNTER_STORE_ENV} names the store API keys' limits are counted in, else one)",
    )
    up_parser.add_argument(
        "--anonymous-account",
        metavar="NAME",
        help="bill calls without a token to this user or org; UNSAFE on a port others can reach "
        f"(default: off; {ANONYMOUS_ACCOUNT!r} with --demo, '' turns it off)",
    )
    add_admin_commands(commands)
    add_render_envoy_command(commands)
    return parser


def up_options(args: argparse.Namespace) -> UpOptions:
    """`switchboard up`'s options; anonymous mode is off unless asked for, or implied by --demo."""
    anonymous = args.anonymous_account
    if anonymous is None:
        anonymous = ANONYMOUS_ACCOUNT if args.demo else ""
    return UpOptions(
        args.http_port,
        args.data_dir,
        args.database_url,
        args.demo,
        args.host,
        router_workers(args.router_workers),
        anonymous_account=anonymous,
    )


COUNTER_STORE_ENV = "SWITCHBOARD_COUNTER_STORE_URL"


def router_workers(asked: int | None) -> int:
    """Without a shared counter store each Router counts API keys' limits in its own memory, so N
    of them would let a key have N times its limits: one, unless asked for more (then a warning)."""
    shared = bool(os.environ.get(COUNTER_STORE_ENV))
    if asked is None:
        return (os.cpu_count() or 1) if shared else 1
    if asked > 1 and not shared:
        print(
            f"warning: {asked} Router workers without {COUNTER_STORE_ENV}: each counts API keys' limits in its "
            f"own memory, so a key may get up to {asked} times its limits (docs/api-keys.md)",
            file=sys.stderr,
        )
    return asked


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "render-envoy":
        return render_envoy(args)
    if args.command == "up":
        sys.exit(up(up_options(args)))
    run_admin_command(args)


if __name__ == "__main__":
    main()
