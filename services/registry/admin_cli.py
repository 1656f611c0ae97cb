"""`switchboard` subcommands for operators: a thin client of the admin REST API.

The admin token comes from SWITCHBOARD_ADMIN_TOKEN or --token-file (default
data/admin-token); `providers check` and `providers report` also take a partner's
own token file (a write member of the provider's org). Provider secrets are read from files, never from the
command line (where `ps` would show them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8080"
REQUEST_TIMEOUT_SECONDS = 120
IMPORT_BATCH = 10_000


class AdminCallError(RuntimeError):
    """An admin call the API refused (its status and message) or that could not reach it."""


class AdminClient:
    """JSON over HTTP to Switchboard's REST API with one bearer token (the admin token for /admin/v1)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, accept: tuple[int, ...] = ()) -> dict:
        """The JSON answer; {} for an HTTP error whose status is in `accept`, AdminCallError for any other."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code in accept:
                return {}
            raise AdminCallError(f"{method} {path}: {error.code}: {_error_message(error)}") from None
        except urllib.error.URLError as error:
            raise AdminCallError(f"cannot reach {self.url}: {error.reason}") from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return error.reason


def admin_token(token_file: Path) -> str:
    token = os.environ.get("SWITCHBOARD_ADMIN_TOKEN")
    if token:
        return token
    try:
        return token_file.read_text().strip()
    except OSError:
        raise SystemExit(f"switchboard: set SWITCHBOARD_ADMIN_TOKEN or create {token_file}") from None


def read_secret(path: Path | None) -> str | None:
    return path.read_text().strip() if path else None


def hub_models(lines: IO[str]) -> Iterator[dict]:
    """The hub's model listing (one JSON object a line) as BatchUpsertModels entries."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            model_id = item.get("id") or item["modelId"]
        except (ValueError, KeyError, AttributeError):
            raise SystemExit(f'switchboard: line {number}: not a JSON object with an "id"') from None
        yield {
            "id": model_id,
            "pipelineTag": item.get("pipeline_tag") or "",
            "tags": [t for t in item.get("tags") or [] if isinstance(t, str)],
            "adapterWeightsPath": item.get("adapter_weights_path") or "",
        }


def import_models(client: AdminClient, path: Path, batch_size: int = IMPORT_BATCH) -> int:
    """Upserts every model of a JSONL file in batches; shows progress by bytes read."""
    total = 0
    with path.open("rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="models") as bar:
        batch: list[dict] = []

        def flush() -> None:
            nonlocal total
            total += client.call("POST", "/admin/v1/models:batchUpsert", {"models": batch})["upsertedCount"]
            batch.clear()
            bar.set_postfix(models=total)

        for model in hub_models(_lines_with_progress(raw, bar)):
            batch.append(model)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    return total


def _lines_with_progress(raw: IO[bytes], bar: tqdm) -> Iterator[str]:
    for line in raw:
        bar.update(len(line))
        yield line.decode()


def provider_body(args: argparse.Namespace) -> dict:
    """The provider fields given on the command line (secrets from their files)."""
    body = {
        "id": getattr(args, "id", None),
        "org": args.org,
        "baseUrl": args.base_url,
        "tasks": args.tasks,
        "taskFormats": dict(args.task_formats) if args.task_formats else None,
        "requestIdHeader": args.request_id_header,
        "billingUrl": args.billing_url,
        "defaultRank": args.default_rank,
        "apiKey": read_secret(args.api_key_file),
        "billingAuthorization": read_secret(args.billing_authorization_file),
    }
    return {key: value for key, value in body.items() if value is not None}


def _task_format(text: str) -> tuple[str, str]:
    task, equals, chosen = text.partition("=")
    if not (equals and task and chosen):
        raise argparse.ArgumentTypeError(f"expected TASK=FORMAT, e.g. feature-extraction=hub, not {text!r}")
    return task, chosen


def _add_provider_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--org", required=required, help="the org whose members manage its mappings")
    parser.add_argument("--base-url", required=required, help="the provider's API base URL")
    parser.add_argument("--tasks", nargs="+", help="tasks served, e.g. conversational text-to-image")
    parser.add_argument(
        "--task-format",
        dest="task_formats",
        action="append",
        type=_task_format,
        metavar="TASK=FORMAT",
        help='how the provider is called for a task: "openai" or "hub" (repeatable; default per task)',
    )
    parser.add_argument("--request-id-header", help="response header with the provider's request id")
    parser.add_argument("--billing-url", help="the provider's cost API URL")
    parser.add_argument("--default-rank", type=int, help="order among providers (lower first)")
    parser.add_argument("--api-key-file", type=Path, help="file holding the provider API key")
    parser.add_argument("--billing-authorization-file", type=Path, help="file holding the cost API Authorization")


def token_body(args: argparse.Namespace) -> dict:
    """A token's name and the limits given on the command line (docs/api-keys.md)."""
    limits = {
        "requestsPerMinute": args.requests_per_minute,
        "tokensPerMinute": args.tokens_per_minute,
        "budgetNanoUsd": args.budget_nano_usd,
        "budgetPeriod": args.budget_period,
        "expireTime": args.expire_time,
        "allowedModels": args.allowed_models,
    }
    limits = {key: value for key, value in limits.items() if value is not None}
    return {"name": args.name, **({"limits": limits} if limits else {})}


def _add_token_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests-per-minute", type=int, help="the token's requests per minute")
    parser.add_argument("--tokens-per-minute", type=int, help="the token's input + output tokens per minute")
    parser.add_argument("--budget-nano-usd", type=int, help="the token's spending per period, in nano-USD")
    parser.add_argument("--budget-period", choices=("daily", "weekly", "monthly"), help="the budget's period (UTC)")
    parser.add_argument("--expire-time", help="when the token stops working, RFC 3339 (e.g. 2027-01-31T00:00:00Z)")
    parser.add_argument("--allowed-models", nargs="+", help="the only models the token may call")


Command = Callable[[AdminClient, argparse.Namespace], object]


def _command(parser: argparse.ArgumentParser, run: Command) -> argparse.ArgumentParser:
    parser.set_defaults(run=run)
    return parser


def add_admin_commands(commands: argparse._SubParsersAction) -> None:
    """Adds orgs, users, members, tokens, providers, models and aliases to the `switchboard` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"Switchboard's URL (default {DEFAULT_URL})")
    common.add_argument("--token-file", type=Path, default=Path("data/admin-token"), help="admin token file")

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        return commands.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)

    def sub(parent: argparse._SubParsersAction, name: str, run: Command, *positionals: str):
        parser = _command(parent.add_parser(name, parents=[common]), run)
        for positional in positionals:
            parser.add_argument(positional)
        return parser

    orgs = group("orgs", "organizations")
    sub(orgs, "create", lambda c, a: c.call("POST", "/admin/v1/orgs", {"name": a.name}), "name")
    sub(orgs, "get", lambda c, a: c.call("GET", f"/admin/v1/orgs/{quote(a.name)}"), "name")
    users = group("users", "users")
    sub(users, "create", lambda c, a: c.call("POST", "/admin/v1/users", {"name": a.name}), "name")
    sub(users, "get", lambda c, a: c.call("GET", f"/admin/v1/users/{quote(a.name)}"), "name")
    members = group("members", "org memberships")
    member = "/admin/v1/orgs/{}/members/{}"
    sub(
        members,
        "set",
        lambda c, a: c.call("PUT", member.format(quote(a.org), quote(a.user)), {"role": a.role}),
        "org",
        "user",
        "role",
    )
    sub(members, "remove", lambda c, a: c.call("DELETE", member.format(quote(a.org), quote(a.user))), "org", "user")
    tokens = group("tokens", "API tokens")
    _add_token_limit_options(
        sub(
            tokens,
            "create",
            lambda c, a: c.call("POST", f"/admin/v1/users/{quote(a.user)}/tokens", token_body(a)),
            "user",
            "name",
        )
    )
    _add_token_limit_options(
        sub(
            tokens,
            "update",
            lambda c, a: c.call(
                "PATCH", f"/admin/v1/users/{quote(a.user)}/tokens/{quote(a.name)}", token_body(a).get("limits", {})
            ),
            "user",
            "name",
        )
    )
    sub(
        tokens,
        "revoke",
        lambda c, a: c.call("DELETE", f"/admin/v1/users/{quote(a.user)}/tokens/{quote(a.name)}"),
        "user",
        "name",
    )
    providers = group("providers", "inference providers")
    _add_provider_options(
        sub(providers, "create", lambda c, a: c.call("POST", "/admin/v1/providers", provider_body(a)), "id"), True
    )
    sub(providers, "get", lambda c, a: c.call("GET", f"/admin/v1/providers/{quote(a.id)}"), "id")
    sub(providers, "list", lambda c, a: c.call("GET", "/admin/v1/providers?pageSize=1000"))
    update = sub(
        providers, "update", lambda c, a: c.call("PATCH", f"/admin/v1/providers/{quote(a.id)}", provider_body(a)), "id"
    )
    _add_provider_options(update, False)
    sub(providers, "delete", lambda c, a: c.call("DELETE", f"/admin/v1/providers/{quote(a.id)}"), "id")
    mapping = "/api/partners/{}/models/{}"
    check = sub(
        providers,
        "check",
        lambda c, a: c.call("POST", mapping.format(quote(a.id), quote(a.mapping_id)) + ":check", {}),
        "id",
        "mapping_id",
    )
    check.set_defaults(exit_status=lambda report: 0 if report.get("passed") else 1)
    check.description = "Runs the conformance check of a mapping; exit status 1 when a check failed."
    sub(
        providers,
        "report",
        lambda c, a: c.call("GET", mapping.format(quote(a.id), quote(a.mapping_id)) + "/conformanceReport"),
        "id",
        "mapping_id",
    )
    models = group("models", "the model catalog")
    importer = sub(models, "import", lambda c, a: {"upserted": import_models(c, a.file, a.batch_size)})
    importer.add_argument("file", type=Path, help='JSONL: one {"id", "pipeline_tag", "tags"} object a line')
    importer.add_argument("--batch-size", type=int, default=IMPORT_BATCH, help="models per call (at most 10000)")
    sub(models, "get", lambda c, a: c.call("GET", f"/admin/v1/models/{a.id}"), "id")
    aliases = group("aliases", "model aliases: other names for catalog models")
    alias_path = "/admin/v1/modelAliases"
    sub(
        aliases,
        "create",
        lambda c, a: c.call("POST", alias_path, {"name": a.name, "target": a.target}),
        "name",
        "target",
    )
    sub(aliases, "get", lambda c, a: c.call("GET", f"{alias_path}/{quote(a.name)}"), "name")
    sub(aliases, "list", lambda c, a: c.call("GET", f"{alias_path}?pageSize=1000"))
    sub(aliases, "delete", lambda c, a: c.call("DELETE", f"{alias_path}/{quote(a.name)}"), "name")


def run_admin_command(args: argparse.Namespace) -> None:
    """Runs a parsed admin subcommand and prints its JSON answer."""
    client = AdminClient(args.url, admin_token(args.token_file))
    try:
        answer = args.run(client, args)
    except AdminCallError as error:
        raise SystemExit(f"switchboard: {error}") from None
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if hasattr(args, "exit_status"):
        sys.exit(args.exit_status(answer))
