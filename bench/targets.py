"""The three targets under load, all pointed at the same stub: the stub itself
(direct), Switchboard's real stack, and the LiteLLM proxy in its own venv."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.stub import StubPorts, envoy_argv, envoy_stub_config
from services.launcher import Stack, UpOptions, free_port, grpc_serving, http_ok, start_stack

BENCH_DIR = Path(__file__).resolve().parent
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = BENCH_DIR / "litellm-venv"
HTTP_TIMEOUT = 30.0

# Scenario kinds -> which stub upstream serves it.
KINDS = {"chat": "unary", "stream": "stream", "paced": "paced", "image": "unary", "embed": "unary"}
CHAT_PATH = "/v1/chat/completions"
IMAGE_PATH = "/v1/images/generations"
EMBED_PATH = "/v1/embeddings"
# The task each kind's model is mapped for, and its catalog entry (pipeline tag, tags).
TASKS = {"image": "text-to-image", "embed": "feature-extraction"}
CATALOG = {"image": ("text-to-image", []), "embed": ("feature-extraction", [])}


@dataclass
class Target:
    """One thing to load: where each kind of request goes, with which model and token."""

    name: str
    urls: dict[str, str]
    models: dict[str, str]
    auth: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid, for RSS and profiles
    providers: dict[str, str] = field(default_factory=dict)  # kind -> provider id (Switchboard only)
    # The same caller's token with rate limits set too high to bite (Switchboard only): target "key-limits".
    limited_auth: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.auth} if self.auth else {}


def _path(kind: str) -> str:
    return {"image": IMAGE_PATH, "embed": EMBED_PATH}.get(kind, CHAT_PATH)


def start_stub(fixtures: Stack) -> StubPorts:
    """Starts the Envoy stub and the paced SSE stub under `fixtures`."""
    ports = StubPorts(admin=free_port(), unary=free_port(), stream=free_port(), paced=free_port())
    config = fixtures.data_dir / "stub-envoy.yaml"
    config.write_text(envoy_stub_config(ports.admin, ports.unary, ports.stream))
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    fixtures.start(
        "stub-envoy", envoy_argv(envoy, config, ports.admin), http_ok(f"http://127.0.0.1:{ports.admin}/ready")
    )
    fixtures.start(
        "stub-paced",
        [sys.executable, "-m", "bench.stub", str(ports.paced)],
        lambda: _port_open(ports.paced),
    )
    fixtures.wait_ready()
    return ports


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def direct_target(stub: StubPorts) -> Target:
    """The stub itself: the floor every gateway is measured against."""
    urls = {kind: stub.url(upstream).removesuffix("/v1") + _path(kind) for kind, upstream in KINDS.items()}
    return Target("direct", urls, dict.fromkeys(KINDS, "stub-model"))


# --- Switchboard -----------------------------------------------------------------


class AdminClient:
    """Just enough of Switchboard's admin REST API to register the bench's provider and models."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token

    def call(self, method: str, path: str, body: dict, token: str | None = None) -> dict:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path} -> {exc.code}: {exc.read()[:500]!r}") from exc


# A key's rate limits at their caps: checked and counted on every request, never reached.
UNBITING_LIMITS = {"requestsPerMinute": 1_000_000, "tokensPerMinute": 1_000_000_000}


def register_switchboard(
    admin: AdminClient, stub: StubPorts, limited: bool = True
) -> tuple[str, dict[str, str], dict[str, str], str]:
    """Registers one provider per stub upstream and one hub model per kind; returns
    the caller's token (a writer of the providers' org), the model id and the provider id per kind,
    and when `limited` a second token of the caller's with UNBITING_LIMITS ("" otherwise: an earlier
    checkout's tokens may have no limits)."""
    suffix = secrets.token_hex(3)
    org, user = f"bench-org-{suffix}", f"bench-user-{suffix}"
    admin.call("POST", "/admin/v1/orgs", {"name": org})
    admin.call("POST", "/admin/v1/users", {"name": user})
    admin.call("PUT", f"/admin/v1/orgs/{org}/members/{user}", {"role": "write"})
    token = admin.call("POST", f"/admin/v1/users/{user}/tokens", {"name": "bench"})["token"]
    limited_token = ""
    if limited:
        body = {"name": "limited", "limits": UNBITING_LIMITS}
        limited_token = admin.call("POST", f"/admin/v1/users/{user}/tokens", body)["token"]
    models: dict[str, str] = {}
    providers: dict[str, str] = {}
    for kind, upstream in KINDS.items():
        provider, model = f"bench-{kind}-{suffix}", f"bench/{kind}-{suffix}"
        task = TASKS.get(kind, "conversational")
        admin.call(
            "POST",
            "/admin/v1/providers",
            {
                "id": provider,
                "org": org,
                "baseUrl": stub.url(upstream).removesuffix("/v1"),
                "apiKey": "stub-key-0123456789abcdef",  # at least 16 characters (docs/secrets.md)
                "tasks": [task],
                "requestIdHeader": "Inference-Id",
            },
        )
        pipeline, tags = CATALOG.get(kind, ("text-generation", ["conversational"]))
        catalog_entry = {"id": model, "pipelineTag": pipeline, "tags": tags}
        admin.call("POST", "/admin/v1/models:batchUpsert", {"models": [catalog_entry]})
        admin.call(
            "POST",
            f"/api/partners/{provider}/models",
            {"task": task, "hfModel": model, "providerModel": "stub-model", "status": "live"},
            token=token,
        )
        models[kind], providers[kind] = model, provider
    return token, models, providers, limited_token


def start_switchboard(
    data_dir: Path,
    stub: StubPorts,
    router_replicas: int = 1,
    name: str = "switchboard",
    metrics: bool = True,
    environment: dict[str, str] | None = None,
) -> tuple[Stack, Target]:
    """Switchboard's real stack (Envoy, Registry, Router, Billing on SQLite), registered against the stub;
    `metrics` and `environment` (e.g. OTEL_EXPORTER_OTLP_ENDPOINT) as for `switchboard up`."""
    port = free_port()
    # No health probes: the stream stub answers every request, a probe's unary one too, with SSE,
    # so probes would rightly take its mapping out of routing mid-run.
    settings = {"SWITCHBOARD_PROBES_ENABLED": "false", **(environment or {})}
    options = UpOptions(port, data_dir, "", demo=False, router_replicas=router_replicas, metrics=metrics,
                        environment=settings)  # fmt: skip
    stack, admin_token, _ = start_stack(options)
    try:
        base = f"http://127.0.0.1:{port}"
        token, models, providers, limited = register_switchboard(AdminClient(base, admin_token), stub)
    except BaseException:
        stack.stop()
        raise
    urls = {kind: base + _path(kind) for kind in KINDS}
    pids = {child.name: child.process.pid for child in stack.children}
    return stack, Target(name, urls, models, f"Bearer {token}", pids, providers, f"Bearer {limited}")


def start_baseline(
    data_dir: Path, stub: StubPorts, checkout: Path | None, router_replicas: int = 1
) -> tuple[Stack, Target]:
    """Switchboard as an earlier checkout builds it (`switchboard up` from its own .venv and
    directory, without PYTHONPATH to this checkout), registered against the stub like the
    current one: the "before" of a paired run, with as many Routers as the current one (a
    checkout older than --router-workers runs one)."""
    if checkout is None:
        raise RuntimeError("target baseline needs --baseline <checkout with a .venv>")
    port, admin_token = free_port(), "sb-admin-" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"SWITCHBOARD_ADMIN_TOKEN": admin_token}
    env["SWITCHBOARD_PROBES_ENABLED"] = "false"  # as for the current stack (start_switchboard says why)
    stack = Stack(data_dir, env)
    base = f"http://127.0.0.1:{port}"
    argv = [str(checkout / ".venv" / "bin" / "switchboard"), "up", "--http-port", str(port),
            "--data-dir", str(data_dir / "stack")]  # fmt: skip
    if "--router-workers" in (checkout / "services" / "cli.py").read_text():  # its default: one per core
        argv += ["--router-workers", str(router_replicas)]
    # From the checkout: `python -m services.x` of its launcher must find the checkout's code, not ours.
    child = stack.start("baseline", argv, http_ok(f"{base}/v1/providers"), cwd=checkout)
    try:
        stack.wait_ready()
        token, models, providers, _ = register_switchboard(AdminClient(base, admin_token), stub, limited=False)
    except BaseException:
        stack.stop()
        raise
    urls = {kind: base + _path(kind) for kind in KINDS}
    pids = _children_by_name(child.process.pid)
    return stack, Target("baseline", urls, models, f"Bearer {token}", pids, providers)


def _children_by_name(launcher: int) -> dict[str, int]:
    """The processes a launcher started, named as in its logs (registry, router, ..., envoy)."""
    named = {}
    for pid, argv in _started(launcher):
        module = next((a.decode() for a in argv if a.startswith(b"services.")), "services.envoy")
        name = module.removeprefix("services.")
        copies = sum(1 for known in named if known.partition("-")[0] == name)
        named[f"{name}-{copies + 1}" if copies else name] = pid  # Router workers: router, router-2, ...
    return named


def _started(parent: int) -> list[tuple[int, list[bytes]]]:
    """A process's children and their command lines; a fork server's children (services/forkserver.py)
    stand for it. A forked service's command line is one string: split on spaces too."""
    started = []
    for pid in map(int, Path(f"/proc/{parent}/task/{parent}/children").read_text().split()):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        started += _started(pid) if b"services.forkserver" in argv else [(pid, argv)]
    return started


# --- LiteLLM ---------------------------------------------------------------------


def litellm_config(stub: StubPorts) -> str:
    """LiteLLM proxy config: one model name per kind, each an openai-compatible model on the stub."""
    lines = ["model_list:"]
    for kind, upstream in KINDS.items():
        lines += [
            f"  - model_name: bench-{kind}",
            "    litellm_params:",
            f"      model: openai/{'stub-image' if kind == 'image' else 'stub-model'}",
            f"      api_base: {stub.url(upstream)}",
            "      api_key: stub-key",
        ]
        if kind in ("image", "embed"):
            lines += ["    model_info:", f"      mode: {'image_generation' if kind == 'image' else 'embedding'}"]
    # drop_params: LiteLLM refuses `response_format` for images otherwise; dropping is its documented way.
    lines += ["litellm_settings:", "  telemetry: false", "  drop_params: true"]
    return "\n".join(lines) + "\n"


def ensure_litellm() -> Path:
    """The `litellm` command of bench/litellm-venv, installed (pinned) on first use."""
    command = LITELLM_VENV / "bin" / "litellm"
    if not command.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"]
        subprocess.run(pip, check=True)
    return command


def start_litellm(fixtures: Stack, stub: StubPorts) -> Target:
    """The LiteLLM proxy: one worker, no database, offline cost map, a long random master key."""
    command = ensure_litellm()
    config = fixtures.data_dir / "litellm.yaml"
    config.write_text(litellm_config(stub))
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(24)
    fixtures.env.update({"LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    child = fixtures.start("litellm", argv, http_ok(f"http://127.0.0.1:{port}/health/liveliness"))
    fixtures.wait_ready(deadline_seconds=180)
    base = f"http://127.0.0.1:{port}"
    urls = {kind: base + _path(kind) for kind in KINDS}
    models = {kind: f"bench-{kind}" for kind in KINDS}
    return Target("litellm", urls, models, f"Bearer {key}", {"litellm": child.process.pid})


# --- The floor -------------------------------------------------------------------


def start_floor(fixtures: Stack, stub: StubPorts) -> Target:
    """Switchboard's Envoy config in front of bench/floor.py's do-nothing-but-forward Router."""
    from bench.floor import FLOOR_MODELS
    from edge.envoy import EnvoyPorts, render

    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    upstreams = [stub.url(kind) for kind in ("unary", "stream", "paced")]
    fixtures.start(
        "floor-router",
        [sys.executable, "-m", "bench.floor", str(grpc_port), *upstreams],
        grpc_serving(f"127.0.0.1:{grpc_port}"),
    )
    # Registry and Billing are never called here; their clusters point at the floor's port only to be valid.
    backends = {name: [("127.0.0.1", grpc_port)] for name in ("registry", "router", "billing")}
    config = fixtures.data_dir / "floor-envoy.yaml"
    config.write_text(render(EnvoyPorts(http_port=http_port, admin_port=admin_port, backends=backends)))
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
    argv = [envoy, "-c", str(config), "--log-level", "warn", "--base-id", str(admin_port)]
    fixtures.start("floor-envoy", argv, http_ok(f"http://127.0.0.1:{admin_port}/ready"))
    fixtures.wait_ready()
    base = f"http://127.0.0.1:{http_port}"
    pids = {c.name: c.process.pid for c in fixtures.children if c.name.startswith("floor-")}
    return Target("floor", {kind: base + _path(kind) for kind in KINDS}, dict(FLOOR_MODELS), "", pids)
