"""`switchboard up`: Envoy and the three services as child processes.

Children die with the launcher (PR_SET_PDEATHSIG), so no process outlives it,
even when the launcher itself is killed.
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import shared_service_credential
from services.common.envoy import EnvoyPorts, render
from services.common.secrets import private_directory, private_file, private_tree, read_or_create_secret

READY_DEADLINE_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel hands out to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, chosen below the ephemeral range: between this choice and the
    child's bind, no outgoing connection of this machine can take it."""
    low, _ = _ephemeral_ports()
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError("no free port below the ephemeral range")


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A started process, its log file, and how to tell it is ready."""

    name: str
    process: subprocess.Popen
    log_path: Path
    ready: Callable[[], bool]

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def grpc_serving(address: str) -> Callable[[], bool]:
    """A readiness probe: the gRPC health service answers SERVING."""

    def probe() -> bool:
        with grpc.insecure_channel(address) as ch:
            try:
                answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return answer.status == health_pb2.HealthCheckResponse.SERVING

    return probe


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: the URL answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    return probe


def admin_token(data_dir: Path, environment: Mapping[str, str]) -> tuple[str, str]:
    """The admin token and where it comes from: the environment, or a file
    created (mode 0600) in the data directory on first start."""
    from_env = environment.get("SWITCHBOARD_ADMIN_TOKEN")
    if from_env:
        return from_env, "SWITCHBOARD_ADMIN_TOKEN"
    path = data_dir / "admin-token"
    return read_or_create_secret(path, lambda: "sb-admin-" + secrets.token_urlsafe(32)), str(path)


class Stack:
    """The processes of one running stack."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.children: list[Child] = []
        self.addresses: dict[str, str] = {}  # service (and "envoy") -> host:port
        self.metrics: dict[str, str] = {}  # service (and "envoy") -> its Prometheus endpoint; empty: off
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Runs argv (in `cwd`) as a child named `name`, its environment the stack's plus `env`."""
        log_path = self.data_dir / "logs" / f"{name}.log"
        private_file(log_path)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
                cwd=cwd,
                preexec_fn=_die_with_parent,
                umask=0o077,
            )
        child = Child(name, process, log_path, ready)
        self.children.append(child)
        return child

    def start_service(self, name: str, port: int, *options: str, module: str = "") -> Child:
        """Runs `python -m services.<module or name>` on the port."""
        self.addresses[name] = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", f"services.{module or name}", "--port", str(port), *options]
        if self.metrics:  # on: each service serves /metrics on a port of its own
            metrics_port = free_port()
            self.metrics[name] = f"http://127.0.0.1:{metrics_port}/metrics"
            argv += ["--metrics-port", str(metrics_port)]
        return self.start(name, argv, grpc_serving(f"127.0.0.1:{port}"))

    def wait_ready(self, deadline_seconds: float = READY_DEADLINE_SECONDS) -> None:
        """Returns when every child is ready; raises when one dies or time runs out."""
        deadline = time.monotonic() + deadline_seconds
        pending = list(self.children)
        while pending:
            self.check_alive()
            pending = [c for c in pending if not c.ready()]
            if pending and time.monotonic() > deadline:
                names = ", ".join(c.name for c in pending)
                raise RuntimeError(f"not ready after {deadline_seconds:.0f}s: {names}")
            if pending:
                time.sleep(0.1)

    def check_alive(self) -> None:
        """Raises naming the first child that exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{child.name} exited with status {code}; last lines of {child.log_path}:\n{child.tail()}"
                )

    def stop(self) -> None:
        """SIGTERM to every child, SIGKILL to those still running after the grace time."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


@dataclass
class UpOptions:
    """What `switchboard up` was asked for."""

    http_port: int
    data_dir: Path
    database_url: str
    demo: bool
    host: str = "127.0.0.1"
    router_replicas: int = 1
    metrics: bool = True  # Prometheus endpoints (the services' and Envoy's)
    # SWITCHBOARD_* settings for the services, over the launcher's own environment (tests, benchmarks)
    environment: Mapping[str, str] = field(default_factory=dict)


def start_stack(options: UpOptions) -> tuple[Stack, str, str]:
    """Starts the services and Envoy; returns the stack, the admin token and its source."""
    data_dir = options.data_dir.resolve()
    private_directory(data_dir)
    environment = {**os.environ, **options.environment}
    token, token_source = admin_token(data_dir, environment)
    env = {
        # glibc's per-thread malloc arenas let a threaded Python process's RSS creep; two are plenty here
        "MALLOC_ARENA_MAX": "2",
        **environment,
        "SWITCHBOARD_ADMIN_TOKEN": token,
        "SWITCHBOARD_DATA_DIR": str(data_dir),
    }
    # Router replicas keep their spool in data directories of their own: all get the one credential.
    env.setdefault("SWITCHBOARD_SERVICE_CREDENTIAL", shared_service_credential(data_dir))
    if options.database_url:
        env["SWITCHBOARD_DATABASE_URL"] = options.database_url
    stack = Stack(data_dir, env)
    ports = {name: free_port() for name in ("registry", "billing", "envoy_admin")}
    if options.metrics:
        stack.metrics["envoy"] = f"http://127.0.0.1:{ports['envoy_admin']}/stats/prometheus"
    registry = f"127.0.0.1:{ports['registry']}"
    billing = f"127.0.0.1:{ports['billing']}"
    try:
        stack.start_service("registry", ports["registry"])
        stack.start_service("billing", ports["billing"], "--registry-address", registry)
        routers = _start_routers(stack, options.router_replicas, registry, billing)
        envoy_config = data_dir / "envoy.yaml"
        envoy_config.write_text(
            render(
                EnvoyPorts(
                    http_port=options.http_port,
                    admin_port=ports["envoy_admin"],
                    listen_address=options.host,
                    backends={
                        "registry": [("127.0.0.1", ports["registry"])],
                        "billing": [("127.0.0.1", ports["billing"])],
                        "router": [("127.0.0.1", port) for port in routers],
                    },
                    otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
                    trace_ratio=float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1),
                )
            )
        )
        stack.addresses["envoy"] = f"{options.host}:{options.http_port}"
        stack.addresses["envoy_admin"] = f"127.0.0.1:{ports['envoy_admin']}"
        envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
        stack.start(
            "envoy",
            [envoy, "-c", str(envoy_config), "--log-level", "warn", "--base-id", str(ports["envoy_admin"])],
            http_ok(f"http://127.0.0.1:{ports['envoy_admin']}/ready"),
        )
        stack.wait_ready()
        private_tree(data_dir)  # what the launcher wrote (logs, envoy.yaml) and what was there before
    except BaseException:
        stack.stop()
        raise
    return stack, token, token_source


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM and SIGINT stop the stack the same way. SIGINT is set explicitly: a
    shell starts background jobs with it ignored, which would turn off Ctrl-C's default."""
    raise KeyboardInterrupt


def _start_routers(stack: Stack, replicas: int, registry: str, billing: str) -> list[int]:
    """Starts the Router replicas; returns their ports. The first is "router"; the others,
    "router-2", ..., keep their ledger spool in a data directory of their own."""
    ports = []
    for number in range(1, max(1, replicas) + 1):
        port = free_port()
        name = "router" if number == 1 else f"router-{number}"
        own_dir = [] if number == 1 else ["--data-dir", str(stack.data_dir / name)]
        addresses = ["--registry-address", registry, "--billing-address", billing]
        stack.start_service(name, port, *addresses, *own_dir, module="router")
        ports.append(port)
    return ports


def up(options: UpOptions) -> int:
    """Runs the stack until Ctrl-C or SIGTERM; non-zero when a child died."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    try:
        stack, token, token_source = start_stack(options)
    except RuntimeError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    base_url = f"http://{options.host}:{options.http_port}"
    try:
        extra = ""
        if options.demo:
            from services.demo import start_demo

            extra = start_demo(stack, base_url, token)
        print(f"ready: {base_url}", flush=True)
        print(f"  admin token: {token_source}", flush=True)
        print(f"  logs: {stack.data_dir / 'logs'}", flush=True)
        for name, url in stack.metrics.items():
            print(f"  metrics: {name} {url}", flush=True)
        print(f"  try: curl -s {base_url}/v1/providers", flush=True)
        if extra:
            print(extra, flush=True)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except RuntimeError as exc:
        print(f"switchboard: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
