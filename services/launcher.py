"""`switchboard up`: Envoy and the three services as child processes, supervised.

A child that dies is started again with exponential backoff (reset once it has
served a while) while the others keep serving; docs/operations.md says what callers see
meanwhile. The services are forked from a fork server that imported their code once
(services/forkserver.py), Envoy is started as a program. Children die with the launcher
(PR_SET_PDEATHSIG, through the fork server for the services), so no process outlives it, even when
the launcher itself is killed.
"""

from __future__ import annotations

import itertools
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge.envoy import EnvoyPorts, render
from edge.limits import EdgeLimits
from services.common.backoff import Backoff
from services.common.secrets import (
    private_directory,
    private_file,
    private_tree,
    read_or_create_secret,
    shared_service_credential,
)
from services.common.telemetry import span_flush_ms, trace_ratio
from services.forkserver import ForkedProcess, die_with_parent, fork_server, forkable_module, stop_fork_servers

READY_DEADLINE_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0  # at least, after SIGTERM: a child's own grace (SWITCHBOARD_SHUTDOWN_GRACE_SECONDS) + 5 s
STOP_MARGIN_SECONDS = 5.0
DRAIN_POLL_SECONDS = 0.05  # how often a stop asks Envoy whether calls are still under way
# How soon Envoy's access log lines reach logs/envoy.log (Envoy's default: every 10 s).
ACCESS_LOG_FLUSH_MS = 1000
# A crashed child is started again after 0.2 s, 0.4 s, ... up to 30 s while it keeps crashing;
# one that has served this long since its start counts as healthy again (its next crash waits 0.2 s).
RESTART_BACKOFF_INITIAL_SECONDS = 0.2
RESTART_BACKOFF_MAX_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 30.0
SUPERVISE_INTERVAL_SECONDS = 0.2


class PortInUse(RuntimeError):
    """A port the stack needs is taken (e.g. by another `switchboard up`)."""


def check_port_free(host: str, port: int) -> None:
    """Raises PortInUse when something listens on host:port. Envoy's listener sets SO_REUSEPORT,
    so Envoy itself would share a taken port with another stack instead of failing."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # SO_REUSEADDR: connections of an earlier stack still in TIME_WAIT do not count as taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OverflowError:
            raise ValueError(f"port {port} is not a port (0-65535)") from None
        except socket.gaierror as exc:
            raise ValueError(f"cannot listen on {host!r}: {exc.strerror}") from None
        except OSError as exc:
            message = f"port {port} on {host} is already in use ({exc.strerror}); is another stack running?"
            raise PortInUse(message) from None


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel hands out to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Where free_port chooses, when set: "start:stop:step" in this variable, inherited by child
# processes. Parallel test workers each set a slice of their own (tests/conftest.py), so that two
# never choose the same port, nor do the stacks they start.
FREE_PORTS_ENV = "SWITCHBOARD_FREE_PORTS"


def _free_ports_from_env() -> range | None:
    value = os.environ.get(FREE_PORTS_ENV)
    if not value:
        return None
    start, stop, step = (int(part) for part in value.split(":"))
    return range(start, stop, step)


FREE_PORTS: range | None = _free_ports_from_env()
_handed_out: set[int] = set()  # a port handed out may not be bound yet: never hand it out twice


def below_ephemeral_ports() -> range:
    """From 10,000 up to the range the kernel hands out to outgoing connections."""
    return range(10_000, max(10_001, _ephemeral_ports()[0]))


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, chosen below the ephemeral range: between this choice and the
    child's bind, no outgoing connection of this machine can take it."""
    ports = FREE_PORTS or below_ephemeral_ports()
    for _ in range(200):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError("no free port below the ephemeral range")


# util-linux's setpriv sets a child's parent-death signal in the child, before it runs the command:
# the launcher then starts children without fork() (vfork), whose atfork handlers gRPC runs in a
# process with channels, and which can deadlock there (a test worker hung in one for good).
SETPRIV = shutil.which("setpriv")


def _spawn(argv: list[str], **options: Any) -> subprocess.Popen:
    """Popen(argv) of a child that gets SIGTERM when the launcher's thread that started it ends."""
    if SETPRIV:
        return subprocess.Popen([SETPRIV, "--pdeathsig", "TERM", "--", *argv], **options)
    return subprocess.Popen(argv, preexec_fn=die_with_parent, **options)  # a fork: without setpriv only


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def exit_reason(code: int) -> str:
    """How a process ended, from its return code."""
    return f"was killed by {_signal_name(code)}" if code < 0 else f"exited with status {code}"


@dataclass
class Child:
    """A started process, how to start it again, and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None
    log_path: Path
    ready: Callable[[], bool]
    ports: list[tuple[str, int]]  # where it listens: checked free before each start
    process: subprocess.Popen | ForkedProcess = field(init=False)
    started_at: float = 0.0
    serving: bool = False  # ready since its latest start
    restart_at: float | None = None  # when it is started again after a crash
    backoff: Backoff = field(
        default_factory=lambda: Backoff(RESTART_BACKOFF_INITIAL_SECONDS, RESTART_BACKOFF_MAX_SECONDS)
    )

    @property
    def service(self) -> str:
        """What it runs: its name without a replica's number ("router-2" runs "router")."""
        base, _, number = self.name.rpartition("-")
        return base if number.isdigit() else self.name

    def spawn(self) -> None:
        """Starts the process (again), its output appended to its log."""
        for host, port in self.ports:
            check_port_free(host, port)
        private_file(self.log_path)
        if forkable_module(self.argv):  # one of ours: forked, its imports already done
            self.process = fork_server(self.env).spawn(self.argv, self.env, self.cwd, self.log_path, umask=0o077)
        else:
            with open(self.log_path, "ab") as log:
                output = {"stdout": log, "stderr": subprocess.STDOUT}
                self.process = _spawn(self.argv, **output, env=self.env, cwd=self.cwd, umask=0o077)
        self.started_at = time.monotonic()
        self.serving = False
        self.restart_at = None

    def ended(self, code: int) -> str:
        """How its process ended and its last lines of log."""
        return f"{exit_reason(code)}; last lines of {self.log_path}:\n{self.tail()}"

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


def _calls_in_flight(admin: str) -> int:
    """The calls Envoy's listener has under way (its admin listener's own left out)."""
    with urllib.request.urlopen(f"http://{admin}/stats?filter=downstream_rq_active$", timeout=2) as answer:
        lines = answer.read().decode().splitlines()
    return sum(int(line.rpartition(" ")[2]) for line in lines if not line.startswith("http.admin."))


def hosts_failing_health(admin: str) -> set[str]:
    """The replicas ("cluster::host:port") Envoy's active health checks keep out of its round robin:
    failed, or not checked yet (edge/envoy.py health-checks clusters with several replicas)."""
    with urllib.request.urlopen(f"http://{admin}/clusters", timeout=2) as answer:
        lines = answer.read().decode().splitlines()
    flagged = (line.partition("::health_flags::") for line in lines if "::health_flags::" in line)
    return {host for host, _, flags in flagged if "failed_active_hc" in flags or "pending_active_hc" in flags}


def _await_envoy_balancing(admin: str, deadline_seconds: float) -> None:
    """Returns once Envoy sends calls to every replica: its first health check of one may have come
    before that replica was serving (they start together), and it is then left out until the next."""
    deadline = time.monotonic() + deadline_seconds
    while failing := hosts_failing_health(admin):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Envoy's health checks fail after {deadline_seconds:.0f}s: {', '.join(sorted(failing))}"
            )
        time.sleep(0.1)


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
        # Each service's place in the start order, kept when it is started again (stop() goes backwards).
        self._start_ranks: dict[str, int] = {}
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
        ports: Iterable[tuple[str, int]] = (),
        outside: bool = False,
    ) -> Child:
        """Runs argv (in `cwd`) as a child named `name`, its environment the stack's plus `env`;
        `ports` (host, port) are where it listens, checked free before each start. An `outside`
        child stands for what is outside Switchboard (the demo's provider): it stops after every
        service, since the Routers' answers in flight and Billing's cost calls still reach it."""
        log_path = self.data_dir / "logs" / f"{name}.log"
        child = Child(name, argv, {**self.env, **(env or {})}, cwd, log_path, ready, list(ports))
        child.spawn()
        self.children.append(child)
        rank = len(self._start_ranks)
        self._start_ranks.setdefault(child.service, -1 - rank if outside else rank)
        return child

    def start_service(self, name: str, port: int, *options: str, module: str = "") -> Child:
        """Runs `python -m services.<module or name>` on the port."""
        self.addresses[name] = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", f"services.{module or name}", "--port", str(port), *options]
        ports = [("127.0.0.1", port)]
        if self.metrics:  # on: each service serves /metrics on a port of its own
            metrics_port = free_port()
            self.metrics[name] = f"http://127.0.0.1:{metrics_port}/metrics"
            argv += ["--metrics-port", str(metrics_port)]
            ports.append(("127.0.0.1", metrics_port))
        return self.start(name, argv, grpc_serving(f"127.0.0.1:{port}"), ports=ports)

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
                raise RuntimeError(f"{child.name} {child.ended(code)}")

    def supervise(self, say: Callable[[str], None]) -> None:
        """Starts again, after its backoff, every child that dies, and tells (`say`) what it
        restarted and why; runs until interrupted."""
        while True:
            self.supervise_once(time.monotonic(), say)
            time.sleep(SUPERVISE_INTERVAL_SECONDS)

    def supervise_once(self, now: float, say: Callable[[str], None]) -> None:
        """One look at every child, as of `now` (monotonic seconds)."""
        for child in self.children:
            self._supervise_child(child, now, say)

    def _supervise_child(self, child: Child, now: float, say: Callable[[str], None]) -> None:
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._restart(child, say)
            return
        code = child.process.poll()
        if code is not None:
            self._schedule_restart(child, now, child.ended(code), say)
        elif not child.serving:
            self._check_started(child, now, say)
        elif now - child.started_at >= HEALTHY_AFTER_SECONDS:
            child.backoff.reset()

    def _check_started(self, child: Child, now: float, say: Callable[[str], None]) -> None:
        """A restarted child is back once ready; one not ready by the deadline is killed and retried."""
        if child.ready():
            child.serving = True
            if child.backoff.failures:
                took = now - child.started_at
                say(f"{child.name} is back (restart {child.backoff.failures}, ready after {took:.1f}s)")
        elif now - child.started_at > READY_DEADLINE_SECONDS:
            child.process.kill()
            child.process.wait()
            self._schedule_restart(child, now, f"was not ready within {READY_DEADLINE_SECONDS:.0f}s", say)

    @staticmethod
    def _schedule_restart(child: Child, now: float, reason: str, say: Callable[[str], None]) -> None:
        delay = child.backoff.failed()
        child.restart_at = now + delay
        say(f"{child.name} {reason}\nrestarting {child.name} in {delay:.1f}s (restart {child.backoff.failures})")

    @staticmethod
    def _restart(child: Child, say: Callable[[str], None]) -> None:
        try:
            child.spawn()
        except (PortInUse, OSError) as exc:  # e.g. another process took its port meanwhile
            child.restart_at = time.monotonic() + child.backoff.failed()
            say(f"cannot restart {child.name}: {exc}; trying again in {child.backoff.delay:.1f}s")

    def _drain_envoy(self, deadline: float) -> None:
        """Envoy exits at once on SIGTERM, cutting the calls in flight through it: first its listeners
        drain (kept-alive callers are told to close), and the calls under way end, until the deadline."""
        admin = self.addresses.get("envoy_admin")
        if not admin:
            return
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://{admin}/drain_listeners?graceful", method="POST"),
                                   timeout=2).close()  # fmt: skip
            while time.monotonic() < deadline and _calls_in_flight(admin):
                time.sleep(DRAIN_POLL_SECONDS)
        except OSError:  # Envoy is gone or not answering: nothing to wait for
            return

    def stop_grace(self) -> float:
        """How long a child has after SIGTERM: its own shutdown grace and a margin, at least STOP_GRACE_SECONDS."""
        try:
            own = float(self.env.get("SWITCHBOARD_SHUTDOWN_GRACE_SECONDS", 0) or 0)
        except ValueError:  # the child refuses it at start (its settings' check)
            own = 0.0
        return max(STOP_GRACE_SECONDS, own + STOP_MARGIN_SECONDS)

    def stop(self) -> None:
        """Stops the children in the reverse of their services' first start order (a service started
        again keeps its place), replicas of one service together: Envoy first (no new calls), then
        the Routers, whose last ledger send reaches a Billing still running, then Billing, then the
        Registry, then what stands for the outside (start's `outside`). SIGTERM, then SIGKILL after
        the grace time, which each group has in full within one overall deadline: a stop takes at
        most twice the grace."""
        grace = self.stop_grace()
        overall = time.monotonic() + 2 * grace
        ordered = sorted(self.children, key=lambda child: self._start_ranks[child.service], reverse=True)
        for service, group in itertools.groupby(ordered, key=lambda child: child.service):
            replicas = [child for child in group if child.process.poll() is None]
            if service == "envoy" and replicas:
                self._drain_envoy(min(time.monotonic() + grace, overall))
            for child in replicas:
                child.process.terminate()
            deadline = min(time.monotonic() + grace, overall)
            for child in replicas:
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
    # bill inference calls without a token to this account (the Routers' --anonymous-account); off when empty
    anonymous_account: str = ""
    metrics: bool = True  # Prometheus endpoints (the services' and Envoy's)
    # SWITCHBOARD_* settings for the services, over the launcher's own environment (tests, benchmarks)
    environment: Mapping[str, str] = field(default_factory=dict)
    ready_seconds: float = READY_DEADLINE_SECONDS  # how long the children may take to be ready


def start_stack(options: UpOptions) -> tuple[Stack, str, str]:
    """Starts the services and Envoy; returns the stack, the admin token and its source."""
    check_port_free(options.host, options.http_port)  # before any child starts
    # Envoy binds it last: until then free_port() must not choose it for a service or a metrics endpoint.
    _handed_out.add(options.http_port)
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
        routers = _start_routers(stack, options.router_replicas, registry, billing, options.anonymous_account)
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
                    trace_ratio=trace_ratio(env),
                    span_flush_ms=span_flush_ms(env),
                    edge=EdgeLimits.from_environment(env, anonymous=bool(options.anonymous_account)),
                )
            )
        )
        stack.addresses["envoy"] = f"{options.host}:{options.http_port}"
        stack.addresses["envoy_admin"] = f"127.0.0.1:{ports['envoy_admin']}"
        envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or "envoy"
        stack.start(
            "envoy",
            [
                envoy,
                "-c",
                str(envoy_config),
                "--log-level",
                "warn",
                "--base-id",
                str(ports["envoy_admin"]),
                "--file-flush-interval-msec",
                str(ACCESS_LOG_FLUSH_MS),
            ],
            http_ok(f"http://127.0.0.1:{ports['envoy_admin']}/ready"),
            ports=[(options.host, options.http_port), ("127.0.0.1", ports["envoy_admin"])],
        )
        stack.wait_ready(options.ready_seconds)
        _await_envoy_balancing(stack.addresses["envoy_admin"], options.ready_seconds)
        private_tree(data_dir)  # what the launcher wrote (logs, envoy.yaml) and what was there before
    except BaseException:
        stack.stop()
        raise
    return stack, token, token_source


def _say(message: str) -> None:
    """The launcher's own log: what failed, what it restarted and why (stderr)."""
    print(f"switchboard: {message}", file=sys.stderr, flush=True)


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM and SIGINT stop the stack the same way. SIGINT is set explicitly: a
    shell starts background jobs with it ignored, which would turn off Ctrl-C's default.
    The first one stops the stack; later ones are ignored, so that they cannot cut the
    (bounded) stop short with a traceback."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stopping_already)
    raise KeyboardInterrupt


def _stopping_already(_signum: int, _frame: object) -> None:
    """A stop signal while the stack stops: nothing more to do (SIG_IGN would make Python
    complain about a signal that was already pending)."""


def _start_routers(stack: Stack, replicas: int, registry: str, billing: str, anonymous_account: str) -> list[int]:
    """Starts the Router replicas; returns their ports. The first is "router"; the others,
    "router-2", ..., keep their ledger spool in a data directory of their own."""
    ports = []
    for number in range(1, max(1, replicas) + 1):
        port = free_port()
        name = "router" if number == 1 else f"router-{number}"
        own_dir = [] if number == 1 else ["--data-dir", str(stack.data_dir / name)]
        addresses = ["--registry-address", registry, "--billing-address", billing]
        anonymous = ["--anonymous-account", anonymous_account] if anonymous_account else []
        stack.start_service(name, port, *addresses, *own_dir, *anonymous, module="router")
        ports.append(port)
    return ports


def up(options: UpOptions) -> int:
    """Runs the stack, restarting children that die, until Ctrl-C or SIGTERM; non-zero when
    it could not start (a port taken, a child not ready)."""
    try:
        return _run(options)
    finally:
        stop_fork_servers()


def _run(options: UpOptions) -> int:
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    try:
        stack, token, token_source = start_stack(options)
    except (RuntimeError, OSError, ValueError, OverflowError) as exc:
        # a child not ready, a port taken or out of range, a setting out of its range, a process that cannot start
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    base_url = f"http://{options.host}:{options.http_port}"
    try:
        extra = ""
        if options.demo:
            from services.demo import start_demo

            extra = start_demo(stack, base_url, token, options.anonymous_account)
        print(f"ready: {base_url}", flush=True)
        print(f"  admin token: {token_source}", flush=True)
        print(f"  logs: {stack.data_dir / 'logs'}", flush=True)
        for name, url in stack.metrics.items():
            print(f"  metrics: {name} {url}", flush=True)
        print(f"  try: curl -s {base_url}/v1/providers", flush=True)
        if extra:
            print(extra, flush=True)
        stack.supervise(_say)
    except RuntimeError as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
