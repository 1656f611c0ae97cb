"""The documentation's tables that restate code, generated from that code: the settings of every
service, the REST face of every error, the caps of the Router's and the Registry's checks.

Each table lives in a docs/ page between `<!-- generated:NAME -->` and `<!-- /generated -->`;
scripts/generate.py rewrites them (and `--check` fails when one is stale).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import re
import tokenize
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from services.common.config import SECRET_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"(<!-- generated:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)
SETTINGS = {
    "registry": "services.registry.config:RegistrySettings",
    "router": "services.router.config:RouterSettings",
    "billing": "services.billing.config:BillingSettings",
}


def _load(spec: str) -> object:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(field) -> str:
    value = field.default
    if isinstance(value, SecretStr):  # what an unset one means is the setting's own (its meaning says)
        return "unset" if not value.get_secret_value() else "set"
    if value in ("", None):
        return "unset"
    return f"`{value}`"


def _range(field) -> str:
    """A setting's bounds, as its field declares them (a value outside stops the start)."""
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    bounds = [f"{sign} {getattr(rule, kind)}" for rule in field.metadata for kind, sign in words.items()
              if hasattr(rule, kind)]  # fmt: skip
    return f" ({', '.join(bounds)})" if bounds else ""


def configuration() -> str:
    """Every setting of every service: its option, environment variable, services, default, meaning."""
    rows: dict[str, tuple[object, list[str]]] = {}
    for service, spec in SETTINGS.items():
        for name, field in _load(spec).model_fields.items():
            rows.setdefault(name, (field, []))[1].append(service)
    lines = ["| option | environment | services | default | meaning |", "|---|---|---|---|---|"]
    for name, (field, services) in rows.items():
        shown = "all" if len(services) == len(SETTINGS) else ", ".join(services)
        # secrets never go on a command line (services/common/config.py): the environment only
        option = "(environment only)" if name in SECRET_SETTINGS else f"`--{name.replace('_', '-')}`"
        env = "SWITCHBOARD_" + name.upper()
        meaning = _cell(field.description or "") + _range(field)
        lines.append(f"| {option} | `{env}` | {shown} | {_default(field)} | {meaning} |")
    return "\n".join(lines) + "\n"


def errors() -> str:
    """Each gRPC code's HTTP status and OpenAI error type, then the reasons that differ."""
    from services.common import errors as module

    lines = ["| gRPC code | reason | HTTP status | `type` |", "|---|---|---|---|"]
    for code, reason in module.table():
        face = module.rest_face(code, reason)
        lines.append(f"| `{code.name}` | {f'`{reason}`' if reason else '(default)'} | {face.status} | `{face.type}` |")
    return "\n".join(lines) + "\n"


def _caps(module_name: str) -> list[tuple[str, str, str]]:
    """(name, value, comment) of every module-level MAX_* constant with a literal value."""
    path = Path(inspect.getfile(importlib.import_module(module_name)))
    source = path.read_text()
    comments = {
        token.start[0]: token.string.lstrip("# ").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("MAX_") and isinstance(node.value, ast.Constant | ast.BinOp):
                value = ast.get_source_segment(source, node.value) or ""
                found.append((name, value, comments.get(node.lineno, "")))
    return found


def limits_table(*modules: str) -> Callable[[], str]:
    def table() -> str:
        lines = ["| cap | value | what it bounds |", "|---|---|---|"]
        for module in modules:
            lines += [f"| `{name}` | `{value}` | {_cell(comment)} |" for name, value, comment in _caps(module)]
        return "\n".join(lines) + "\n"

    return table


TABLES: dict[str, Callable[[], str]] = {
    "configuration": configuration,
    "errors": errors,
    "router-limits": limits_table("services.common.params"),
    "registry-limits": limits_table("services.common.accounts", "services.registry.domain.validation"),
}


def rendered(text: str) -> str:
    """The page with every generated table made anew."""
    return MARKER.sub(lambda m: m.group(1) + TABLES[m.group("name")]() + m.group(4), text)


def stale_pages(write: bool) -> list[Path]:
    """The docs pages whose tables differ from the code's; rewritten when `write`."""
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        fresh = rendered(text)
        if fresh != text:
            stale.append(page)
            if write:
                page.write_text(fresh, encoding="utf-8")
    return stale
