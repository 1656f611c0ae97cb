"""`bench/run.py flood`: ordinary chat callers (wrk, a few connections) while another client sends
worst-case bodies as fast as they are answered, against quiet phases of the same run.

Rounds interleave quiet and flood phases; the flood's requests must all be answered 4xx, promptly."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import secrets
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

from bench.load import Measurement, Scenario, cpu_seconds, percentile, run_wrk
from bench.report import RESULTS_DIR, run_meta
from bench.targets import CHAT_PATH, Target
from edge.envoy import EnvoyPorts

ENVOY_CAP = EnvoyPorts.max_request_bytes  # Envoy's buffer filter refuses bodies larger than this
CAP_EDGE = 256  # bytes under and over the cap
TAG_COUNT = 40_000
MODEL_CHARS = 20_000
PROVIDER_IDS = 3_000
HANG_SECONDS = 60.0  # no byte of an answer for this long counts as a hang
FLOOD_LEAD_SECONDS = 1.0  # the flood is under way before the callers' run starts
UNKNOWN_MODEL = "bench/no-such-model"
STEM = "flood"
FLOOD_CLIENT = "flood client"  # the harness's process: the flood's sender threads
MAX_HEAD_LINE = 65_536
T = TypeVar("T")
EXAMPLE_CHARS = 160
SETTLE_LIMIT_SECONDS = 300.0
PROMPT_SECONDS = 1.0  # cheap requests are answered this fast again: the work a flood left is done


@dataclass(frozen=True)
class FloodCase:
    """One worst-case request, sent over and over on its own connection."""

    name: str
    path: str
    body: bytes
    what: str
    auth: str = ""  # the Authorization header instead of the target's (a stranger's flood)


@dataclass
class Tally:
    """How one case's requests were answered: outcome ("400", "timeout", an error name) -> count."""

    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # outcome -> the start of its first answer

    def add(self, outcome: str, seconds: float, example: str = "") -> None:
        self.outcomes[outcome] += 1
        self.seconds.append(seconds)
        self.examples.setdefault(outcome, example[:EXAMPLE_CHARS])

    def merge(self, other: Tally) -> None:
        self.outcomes.update(other.outcomes)
        self.seconds += other.seconds
        self.examples = other.examples | self.examples

    def to_json(self) -> dict:
        seconds = [round(s, 4) for s in self.seconds]
        return {"outcomes": dict(self.outcomes), "examples": self.examples, "seconds": seconds}

    def all_4xx(self) -> bool:
        return bool(self.outcomes) and all(o.isdigit() and 400 <= int(o) < 500 for o in self.outcomes)


def _exactly(size: int, build: Callable[[int], dict]) -> bytes:
    """The JSON of `build(n)` at exactly `size` bytes; `build` pads an ASCII string to n characters."""
    body = json.dumps(build(size - len(json.dumps(build(0))))).encode()
    assert len(body) == size, (len(body), size)
    return body


def _chat(model: str, content: str = "Say hello.", **extra: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}


def flood_cases(target: Target) -> list[FloodCase]:
    """The worst-case bodies: every one a caller's mistake, so every answer must be a 4xx."""
    partners = _partners_path(target)
    # Distinct tags but the last, so that the duplicate check has to look at all of them.
    tags = [f"tg{i:05d}" for i in range(TAG_COUNT - 1)] + ["tg00000"]
    tag_filter = {"type": "tag-filter", "task": "conversational", "tags": tags, "providerModel": "stub-model",
                  "adapterType": "lora", "status": "live"}  # fmt: skip

    def typed(n: int) -> dict:  # a model mapping may not carry tags: a 400 once the body is parsed
        return {"task": "conversational", "hfModel": target.models["chat"], "providerModel": "stub-model",
                "tags": ["x" * n]}  # fmt: skip

    def chat_8mib(n: int) -> dict:
        return _chat(UNKNOWN_MODEL, "x" * n)

    compact = json.dumps(tag_filter, separators=(",", ":")).encode()
    cases = [FloodCase("tags-40k", partners, compact, f"tag filter, {TAG_COUNT:,} tags")]
    for side, size in (("under", ENVOY_CAP - CAP_EDGE), ("over", ENVOY_CAP + CAP_EDGE)):
        cases.append(FloodCase(f"chat-8mib-{side}", CHAT_PATH, _exactly(size, chat_8mib), "unknown model"))
        cases.append(FloodCase(f"partners-8mib-{side}", partners, _exactly(size, typed), "model mapping + tags"))
    long_model = _chat("m" * MODEL_CHARS)
    providers = _chat(target.models["chat"], provider=" ".join(f"no-such-provider-{i}" for i in range(PROVIDER_IDS)))
    cases.append(FloodCase("model-20k", CHAT_PATH, json.dumps(long_model).encode(), f"{MODEL_CHARS:,}-char model"))
    cases.append(FloodCase("provider-3k", CHAT_PATH, json.dumps(providers).encode(), f"{PROVIDER_IDS:,} unknown ids"))
    under = _exactly(ENVOY_CAP - CAP_EDGE, chat_8mib)
    cases.append(FloodCase("chat-8mib-bad-token", CHAT_PATH, under, "an invalid token", "Bearer sb-not-a-token"))
    return cases


class Sender:
    """One flood connection: raw sockets and the whole request (headers and body) built once, so that
    the flood spends as little CPU per request as it can (its CPU is counted apart from the stack's)."""

    def __init__(self, target: Target, case: FloodCase, addresses: int = 1) -> None:
        address = urlsplit(target.urls["chat"])
        self.address = (address.hostname or "127.0.0.1", address.port or 80)
        # Each new connection from the next of `addresses` loopback addresses (127.0.0.2, ...): one
        # caller's key from many addresses, past the per-address budget.
        self.sources = itertools.cycle([(f"127.0.0.{2 + i}", 0) for i in range(addresses)]) if addresses > 1 else None
        self.request = request_bytes(case, case.auth or target.auth, f"{self.address[0]}:{self.address[1]}")
        self.socket: socket.socket | None = None
        self.answers: BinaryIO | None = None

    def send(self) -> tuple[int, str]:
        """Sends the request once: (status, the start of the answer's body)."""
        if self.socket is None:
            source = next(self.sources) if self.sources else None
            self.socket = socket.create_connection(self.address, timeout=HANG_SECONDS, source_address=source)
            self.answers = self.socket.makefile("rb")
        assert self.answers is not None
        # Envoy may answer (and close) before it read all of the body; its answer is still to be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.socket.sendall(self.request)
        status, length, close = _answer_head(self.answers)
        example = self.answers.read(length)[:EXAMPLE_CHARS].decode(errors="replace")
        if close:
            self.close()
        return status, example

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = self.answers = None


def request_bytes(case: FloodCase, auth: str, host: str) -> bytes:
    """The case's whole HTTP/1.1 request."""
    head = (
        f"POST {case.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth}\r\nContent-Length: {len(case.body)}\r\n\r\n"
    )
    return head.encode() + case.body


def _answer_head(answers: BinaryIO) -> tuple[int, int, bool]:
    """(status, content length, whether the server closes the connection) from an answer's head."""
    status_line = answers.readline(MAX_HEAD_LINE)
    if not status_line:
        raise ConnectionResetError("the connection closed without an answer")
    status, length, close = int(status_line.split()[1]), 0, False
    while (line := answers.readline(MAX_HEAD_LINE)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    return status, length, close


def _attempt(sender: Sender, tally: Tally) -> None:
    """Sends the case once and tallies how it was answered."""
    started, example = time.perf_counter(), ""
    try:
        status, example = sender.send()
        outcome = str(status)
    except TimeoutError:
        outcome = "timeout"
    except (OSError, ValueError, IndexError) as exc:
        outcome, example = type(exc).__name__, str(exc)
    tally.add(outcome, time.perf_counter() - started, example)
    if not outcome.isdigit():
        sender.close()  # the next request opens a new connection


def _connection(target: Target) -> http.client.HTTPConnection:
    address = urlsplit(target.urls["chat"])
    return http.client.HTTPConnection(address.hostname, address.port, timeout=HANG_SECONDS)


def _flood_case(target: Target, case: FloodCase, stop: threading.Event, tally: Tally, addresses: int) -> None:
    """Sends `case` again and again, each as soon as the previous one was answered, until `stop`."""
    sender = Sender(target, case, addresses)
    try:
        while not stop.is_set():
            _attempt(sender, tally)
    finally:
        sender.close()


def alone(target: Target, cases: list[FloodCase]) -> dict[str, Tally]:
    """Each case once on an idle stack: its answer without a flood around it."""
    tallies = {case.name: Tally() for case in cases}
    for case in cases:
        sender = Sender(target, case)
        try:
            _attempt(sender, tallies[case.name])
        finally:
            sender.close()
        settle(target)
    return tallies


def case_costs(target: Target, cases: list[FloodCase], seconds: float) -> dict[str, CaseCost]:
    """Each case flooding alone for `seconds` on an idle stack: what one of its requests costs each
    process in CPU (steadier than the callers' throughput on a shared machine)."""
    pids = target.pids | {FLOOD_CLIENT: os.getpid()}
    costs = {}
    for case in cases:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        _, tallies = flooded(target, [case], lambda: time.sleep(seconds), lead=0.0)
        tally = tallies[case.name]
        spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        costs[case.name] = CaseCost(len(tally.seconds), seconds, spent, tally)
        settle(target)
    return costs


def cpu_cores(pids: dict[str, int], phase: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """`phase()`, and the CPU each process spent meanwhile, in cores (1.0 = one core all the time)."""
    before, started = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
    result = phase()
    elapsed = time.monotonic() - started
    return result, {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}


def _partners_path(target: Target) -> str:
    return f"/api/partners/{target.providers['chat']}/models"


def _prompt(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None, target: Target,
            expected: int) -> bool:  # fmt: skip
    """Whether a cheap request is answered as expected within PROMPT_SECONDS."""
    asked = time.monotonic()
    try:
        connection.request(method, path, body, target.headers() | {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
    except (OSError, http.client.HTTPException):
        connection.close()
        return False
    return answer.status == expected and time.monotonic() - asked < PROMPT_SECONDS


def settle(target: Target) -> float:
    """Waits until the Registry, directly and through the Router, answers cheap requests promptly again: work
    a flood left behind (a request Envoy gave up on) can keep it busy long after. Returns how long that took,
    or the limit. Each chat names a new unknown model, so that no cached answer stands in for the Registry's."""
    started = time.monotonic()
    connection = _connection(target)
    try:
        while time.monotonic() - started < SETTLE_LIMIT_SECONDS:
            unknown = json.dumps(_chat(f"{UNKNOWN_MODEL}-{secrets.token_hex(4)}")).encode()
            if _prompt(connection, "GET", _partners_path(target), None, target, 200) and _prompt(
                connection, "POST", CHAT_PATH, unknown, target, 404
            ):
                break
    finally:
        connection.close()
    return time.monotonic() - started


def flooded(
    target: Target, cases: list[FloodCase], run: Callable[[], T], addresses: int = 1, lead: float = FLOOD_LEAD_SECONDS
) -> tuple[T, dict[str, Tally]]:
    """`run()` while every case floods on its own connection (from `lead` seconds before; each new
    connection from the next of `addresses` client addresses); waits for the flood's last answers."""
    stop = threading.Event()
    tallies = {case.name: Tally() for case in cases}
    threads = [
        threading.Thread(target=_flood_case, args=(target, case, stop, tallies[case.name], addresses), daemon=True)
        for case in cases
    ]
    for thread in threads:
        thread.start()
    time.sleep(lead)
    try:
        result = run()
    finally:
        stop.set()
        for case, thread in zip(cases, threads, strict=True):
            thread.join(HANG_SECONDS + 5)
            if thread.is_alive():  # a request still unanswered although each read has a timeout
                tallies[case.name].add("hang", HANG_SECONDS)
    return result, tallies


@dataclass
class CaseCost:
    """One case flooding alone: how many requests it sent and the CPU each process spent meanwhile."""

    requests: int
    seconds: float
    cpu_seconds: dict[str, float]  # process -> CPU seconds
    tally: Tally

    def ms_per_request(self, process: str) -> float:
        return self.cpu_seconds[process] * 1000 / max(self.requests, 1)

    def to_json(self) -> dict:
        per_request = {name: round(self.ms_per_request(name), 4) for name in self.cpu_seconds}
        return {"requests": self.requests, "seconds": self.seconds, "cpu_ms_per_request": per_request,
                "outcomes": dict(self.tally.outcomes)}  # fmt: skip


@dataclass
class FloodReport:
    """Every phase of a flood run: per round a quiet and a flooded measurement of the callers."""

    rounds: int
    seconds: float
    connections: int
    cases: list[FloodCase]
    case_seconds: float = 0.0  # each case floods alone this long first, for its CPU per request
    addresses: int = 1  # client addresses the flood's connections come from, in turn
    quiet: list[Measurement] = field(default_factory=list)
    flood: list[Measurement] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    alone: dict[str, Tally] = field(default_factory=dict)  # each case once, on an idle stack
    cpu: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"quiet": [], "flood": []})
    settle_seconds: list[float] = field(default_factory=list)  # after each flood phase
    costs: dict[str, CaseCost] = field(default_factory=dict)  # each case flooding alone
    notes: list[str] = field(default_factory=list)

    def median(self, phase: str, metric: str) -> float:
        return statistics.median(getattr(m, metric) for m in getattr(self, phase))

    def ratio(self, metric: str) -> float | None:
        """Flood over quiet: the median of the per-round ratios (each flood phase against its round's quiet one)."""
        pairs = [(f, q) for f, q in zip(self.flood, self.quiet, strict=True) if getattr(q, metric)]
        return statistics.median(getattr(f, metric) / getattr(q, metric) for f, q in pairs) if pairs else None

    def stack_ms_per_answer(self, phase: str) -> float:
        """The stack's CPU (every process but the flood's sender) per caller answer, median over rounds."""
        return statistics.median(
            sum(c for name, c in cpu.items() if name != FLOOD_CLIENT) * 1000 / m.rps
            for cpu, m in zip(self.cpu[phase], getattr(self, phase), strict=True)
            if m.rps
        )

    def _alone(self, name: str) -> str:
        """ "404 in 12 ms": the case's answer on an idle stack."""
        t = self.alone.get(name)
        return f"{next(iter(t.outcomes))} in {t.seconds[0] * 1000:.0f} ms" if t and t.seconds else "-"

    def floods_ok(self) -> bool:
        return all(t.all_4xx() for t in self.tallies.values())

    def table(self) -> str:
        meta = run_meta(self.rounds, self.seconds)
        lines = [
            f"Flood benchmark, {meta['date']}: {meta['cores']} cores ({meta['machine']}, load average "
            f"{meta['load_average_1_5_15'][1]} over the last 5 min), {self.rounds} rounds "
            f"(quiet, flood) x {self.seconds:g} s, medians over rounds. Ordinary callers: wrk, "
            f"{self.connections} connections, unary chat through the real stack; the flood: one connection per "
            f"case below (each new one from the next of {self.addresses} client address(es)), each request sent "
            "as soon as the previous one was answered.",
            "",
            "| callers | req/s | p50 ms | p99 ms | bad/total |",
            "|---|---:|---:|---:|---:|",
        ]
        for phase in ("quiet", "flood"):
            runs = getattr(self, phase)
            bad, total = sum(m.bad for m in runs), sum(m.requests for m in runs)
            lines.append(
                f"| {phase} | {self.median(phase, 'rps'):.0f} | {self.median(phase, 'p50_ms'):.2f} | "
                f"{self.median(phase, 'p99_ms'):.2f} | {bad}/{total} |"
            )
        ratios = [self.ratio(m) for m in ("rps", "p50_ms", "p99_ms")]
        lines.append("| flood/quiet | " + " | ".join("-" if r is None else f"{r:.2f}x" for r in ratios) + " | - |")
        lines += ["", "Per round:", "", "| round | phase | req/s | p50 ms | p99 ms | bad/total |"]
        lines.append("|---:|---|---:|---:|---:|---:|")
        for rnd, (q, f) in enumerate(zip(self.quiet, self.flood, strict=True), start=1):
            for phase, m in (("quiet", q), ("flood", f)):
                lines.append(
                    f"| {rnd} | {phase} | {m.rps:.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.bad}/{m.requests} |"
                )
        lines += ["", "The flood's requests, all rounds (every answer must be a 4xx, never a 5xx or a hang):", ""]
        lines += ["| case | request | bytes | alone | sent | answers | p50 ms | max ms | all 4xx |"]
        lines.append("|---|---|---:|---|---:|---|---:|---:|---|")
        for case in self.cases:
            t = self.tallies[case.name]
            answers = ", ".join(f"{o} x{n}" for o, n in sorted(t.outcomes.items())) or "none"
            ms = [s * 1000 for s in t.seconds]
            p50, top = (f"{percentile(ms, 50):.1f}", f"{max(ms):.1f}") if ms else ("-", "-")
            lines.append(
                f"| {case.name} | POST {case.path} ({case.what}) | {len(case.body):,} | {self._alone(case.name)} | "
                f"{len(ms)} | {answers} | "
                f"{p50} | {top} | {'yes' if t.all_4xx() else 'NO'} |"
            )
        lines += [
            "",
            "CPU while the callers ran (cores, median over rounds), and the stack's CPU per caller answer (ms, the "
            "flood's work included: the same in both phases when the flood costs the stack nothing):",
        ]
        lines += ["", "| process | quiet | flood |", "|---|---:|---:|"]
        for name in self.cpu["quiet"][0] if self.cpu["quiet"] else {}:
            quiet, flood = (statistics.median(c[name] for c in self.cpu[phase]) for phase in ("quiet", "flood"))
            lines.append(f"| {name} | {quiet:.2f} | {flood:.2f} |")
        if self.cpu["quiet"]:
            quiet, flood = (self.stack_ms_per_answer(phase) for phase in ("quiet", "flood"))
            lines.append(f"| stack ms per caller answer | {quiet:.3f} | {flood:.3f} |")
        lines += self._cost_table()
        settled = ", ".join(f"{s:.1f}" for s in self.settle_seconds)
        lines += [
            "",
            f"After each flood phase the stack needed {settled} s to answer a partner's listing (Registry) and a "
            f"chat for an unknown model (Router, Registry) within {PROMPT_SECONDS:g} s again; the next phase waits.",
        ]
        first_bad = next((m.first_bad for m in self.flood + self.quiet if m.first_bad), "")
        notes = [f"first bad answer to a caller: {first_bad[:200]}"] if first_bad else []
        for when, tallies in (("alone", self.alone), ("in the flood", self.tallies)):
            for name, t in tallies.items():
                notes += [f"{name} {when}, {o}: {t.examples[o]!r}" for o in sorted(t.outcomes) if o[0] != "4"]
        notes += self.notes
        return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))

    def _cost_table(self) -> list[str]:
        """Each case flooding alone: its rate and the CPU one of its requests cost each process."""
        if not self.costs:
            return []
        processes = list(next(iter(self.costs.values())).cpu_seconds)
        lines = ["", f"Each case flooding alone for {self.case_seconds:g} s on an idle stack (one connection): CPU ms "
                 "per flood request, per process (the flood client is the sender, not the stack):", ""]  # fmt: skip
        lines += ["| case | req/s | answers | " + " | ".join(processes) + " |"]
        lines.append("|---|---:|---|" + "---:|" * len(processes))
        for name, cost in self.costs.items():
            answers = ", ".join(f"{o} x{n}" for o, n in sorted(cost.tally.outcomes.items())) or "none"
            figures = " | ".join(f"{cost.ms_per_request(p):.3f}" for p in processes)
            lines.append(f"| {name} | {cost.requests / cost.seconds:.0f} | {answers} | {figures} |")
        return lines

    def to_json(self) -> dict:
        return {
            "meta": run_meta(self.rounds, self.seconds)
            | {"connections": self.connections, "addresses": self.addresses},
            "ratios_flood_over_quiet": {m: self.ratio(m) for m in ("rps", "p50_ms", "p99_ms")},
            "quiet": [m.to_json() for m in self.quiet],
            "flood": [m.to_json() for m in self.flood],
            "cases": {
                c.name: {
                    "path": c.path,
                    "bytes": len(c.body),
                    "alone": self.alone[c.name].to_json() if c.name in self.alone else None,
                    **self.tallies[c.name].to_json(),
                }
                for c in self.cases
            },
            "all_flood_answers_4xx": self.floods_ok(),
            "cpu_cores": self.cpu,
            "stack_ms_per_caller_answer": {p: self.stack_ms_per_answer(p) for p in ("quiet", "flood") if self.cpu[p]},
            "settle_seconds": self.settle_seconds,
            "case_costs": {name: cost.to_json() for name, cost in self.costs.items()},
            "notes": self.notes,
        }

    def write(self) -> list[Path]:
        RESULTS_DIR.mkdir(exist_ok=True)
        json_path, md_path = RESULTS_DIR / f"{STEM}.json", RESULTS_DIR / f"{STEM}.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        md_path.write_text(self.table() + "\n")
        return [json_path, md_path]


def flood_rounds(target: Target, report: FloodReport, log: Callable[[str], None]) -> None:
    """Quiet, flood, quiet, flood, ...: the callers' figures with and without the flood, side by side."""
    scenario = Scenario(f"chat-{report.connections}c", "chat", report.connections, "wrk")
    report.tallies = {case.name: Tally() for case in report.cases}
    pids = target.pids | {FLOOD_CLIENT: os.getpid()}

    def callers() -> tuple[Measurement, dict[str, float]]:
        return cpu_cores(pids, lambda: run_wrk(target, scenario, report.seconds))

    settle(target)
    report.alone = alone(target, report.cases)
    log("alone: " + "; ".join(f"{n} {dict(t.outcomes)} {t.seconds[0]:.2f} s" for n, t in report.alone.items()))
    if report.case_seconds > 0:
        report.costs = case_costs(target, report.cases, report.case_seconds)
        for name, cost in report.costs.items():
            per_request = ", ".join(f"{p} {cost.ms_per_request(p):.3f}" for p in cost.cpu_seconds)
            log(f"cost {name}: {cost.requests / cost.seconds:.0f} req/s, CPU ms per request: {per_request}")
    for rnd in range(1, report.rounds + 1):
        # Odd rounds quiet first, even rounds flood first: a machine whose load drifts during the run
        # does not favour one phase.
        if rnd % 2:
            quiet, quiet_cpu = callers()
        ((flood, flood_cpu), tallies) = flooded(target, report.cases, callers, report.addresses)
        report.settle_seconds.append(settle(target))
        if not rnd % 2:
            quiet, quiet_cpu = callers()
        if report.settle_seconds[-1] >= SETTLE_LIMIT_SECONDS:
            report.notes.append(f"round {rnd}: the stack was still slow {SETTLE_LIMIT_SECONDS:g} s after the flood")
        report.quiet.append(quiet)
        report.flood.append(flood)
        report.cpu["quiet"].append(quiet_cpu)
        report.cpu["flood"].append(flood_cpu)
        for name, tally in tallies.items():
            report.tallies[name].merge(tally)
        for phase, m in (("quiet", quiet), ("flood", flood)):
            log(f"round {rnd} {phase}: {m.rps:7.0f} req/s  p50 {m.p50_ms:8.2f} ms  p99 {m.p99_ms:8.2f} ms  bad {m.bad}")
        log(f"round {rnd} flood answers: " + "; ".join(f"{n} {dict(t.outcomes)}" for n, t in tallies.items()))
        log(f"round {rnd} settled {report.settle_seconds[-1]:.1f} s after the flood")
