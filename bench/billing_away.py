"""Billing away (issue 10): throughput with Billing hung (SIGSTOP) as a ratio of throughput with
Billing healthy, in the same run, for an account without a spending limit (the Router never asks
Billing) and for one with a limit (every request asks Billing, until the Router's breaker opens).

    .venv/bin/python bench/run.py billing-away [--rounds 3] [--duration 10] [--keep]

The load is the router benchmark's chat-32c (wrk, 32 connections, unary chat on the stub, every
answer checked). Each round measures, per account, a run with Billing healthy and then a run with
Billing stopped for the whole of it. Between runs Billing is continued, the Router's ledger spool
is drained (the next run does not carry the backlog) and the breaker's cooldown is waited out (the
next healthy run asks Billing again). Figures are medians over rounds; the goal is >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bench.harness import ROOT, ensure_wrk, usable
from bench.load import SCENARIOS, Measurement, measure
from bench.report import RESULTS_DIR, Report
from bench.targets import AdminClient, Target, start_stub, start_switchboard
from services.launcher import Stack
from services.router.config import RouterSettings

SCENARIO = next(s for s in SCENARIOS if s.name == "chat-32c")
GOAL = 0.8
SPENDING_LIMIT = 10**15  # never reached: it only makes every request ask Billing
COOLDOWN_SECONDS = RouterSettings.model_fields["billing_breaker_cooldown_seconds"].default
DRAIN_DEADLINE_SECONDS = 300.0


@dataclass
class Pair:
    """One round of one account: Billing healthy, then Billing hung."""

    account: str
    healthy: Measurement
    hung: Measurement

    @property
    def ratio(self) -> float:
        return self.hung.rps / self.healthy.rps if self.healthy.rps else 0.0


def with_limit(stack: Stack, target: Target) -> Target:
    """A second caller, with a spending limit, on the same models."""
    admin = AdminClient(f"http://{stack.addresses['envoy']}", stack.env["SWITCHBOARD_ADMIN_TOKEN"])
    user = f"bench-limited-{os.urandom(3).hex()}"
    admin.call("POST", "/admin/v1/users", {"name": user})
    token = admin.call("POST", f"/admin/v1/users/{user}/tokens", {"name": "bench"})["token"]
    admin.call("PUT", f"/v1/billing/accounts/{user}/limit", {"limitNanoUsd": SPENDING_LIMIT})
    return replace(target, name="with a limit", auth=f"Bearer {token}")


class BillingProcess:
    """Billing of the stack, stopped and continued; the Router's spool tells when it caught up."""

    def __init__(self, stack: Stack) -> None:
        self.pid = next(c.process.pid for c in stack.children if c.name == "billing")
        self.spool = stack.data_dir / "router-ledger-spool"

    def hang(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def recover(self) -> None:
        """Continues Billing; returns once the Router sent it every spooled record and the breaker
        (opened by the hung run) let a probe through again."""
        os.kill(self.pid, signal.SIGCONT)
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while any(self.spool.glob("*.batch")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Router's ledger spool did not drain within {DRAIN_DEADLINE_SECONDS:.0f}s")
            time.sleep(0.2)
        time.sleep(COOLDOWN_SECONDS)


def run_rounds(billing: BillingProcess, targets: list[Target], rounds: int, seconds: float) -> list[Pair]:
    pairs = []
    for rnd in range(1, rounds + 1):
        for target in targets:
            healthy = measure(target, SCENARIO, seconds)
            billing.hang()
            try:
                hung = measure(target, SCENARIO, seconds)
            finally:
                billing.recover()
            pairs.append(Pair(target.name, healthy, hung))
            print(
                f"round {rnd} {target.name:12} healthy {healthy.rps:6.0f} req/s, hung {hung.rps:6.0f} req/s:"
                f" {pairs[-1].ratio:.2f}  (bad {healthy.bad}/{hung.bad})",
                flush=True,
            )
    return pairs


def _median(measurements: list[Measurement], metric: str) -> float:
    return statistics.median(getattr(m, metric) for m in measurements)


def table(pairs: list[Pair], rounds: int, seconds: float, notes: list[str]) -> str:
    meta = Report(rounds, seconds).meta()
    lines = [
        f"Billing away, {meta['date']}: {meta['cores']} cores ({meta['machine']}), {rounds} rounds x "
        f"{seconds:g} s per run, {SCENARIO.name} (wrk, {SCENARIO.connections} connections), medians over rounds.",
        f"Load average at the end (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine).",
        "",
        "| account | healthy req/s | hung req/s | hung/healthy | healthy p99 ms | hung p99 ms "
        "| Billing CPU ms per answer (healthy) | bad/total | goal >= 0.8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for account in dict.fromkeys(p.account for p in pairs):
        mine = [p for p in pairs if p.account == account]
        ratio = statistics.median(p.ratio for p in mine)
        healthy, hung = [p.healthy for p in mine], [p.hung for p in mine]
        bad = sum(m.bad for m in healthy + hung)
        total = sum(m.requests for m in healthy + hung)
        billing_cpu = statistics.median(m.cpu_ms_per_request.get("billing", 0.0) for m in healthy)
        lines.append(
            f"| {account} | {_median(healthy, 'rps'):.0f} | {_median(hung, 'rps'):.0f} | {ratio:.2f} "
            f"| {_median(healthy, 'p99_ms'):.1f} | {_median(hung, 'p99_ms'):.1f} | {billing_cpu:.3f} "
            f"| {bad}/{total} | {'yes' if ratio >= GOAL else 'NO'} |"
        )
    return "\n".join(lines + [f"- {note}" for note in notes])


def parse(argv: list[str], prog: str = "bench/run.py billing-away", doc: str = __doc__) -> argparse.Namespace:
    """--rounds, --duration and --keep (of this benchmark and of bench/limited.py)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    return parser.parse_args(argv)


@contextmanager
def two_accounts(keep: bool, prefix: str) -> Iterator[tuple[Stack, list[Target], list[str]]]:
    """A stack on the stub with the same caller's chat-32c without and with a spending limit (warmed up)."""
    ensure_wrk()
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    fixtures = Stack(data_dir / "fixtures", {**os.environ, "PYTHONPATH": str(ROOT)})
    stacks = [fixtures]
    try:
        stub = start_stub(fixtures)
        stack, unlimited = start_switchboard(data_dir / "switchboard", stub)
        stacks.append(stack)
        targets = [replace(unlimited, name="no limit"), with_limit(stack, unlimited)]
        notes: list[str] = []
        if usable(targets, [SCENARIO], notes)[SCENARIO.name] != targets:
            raise SystemExit("; ".join(notes))
        yield stack, targets, notes
    finally:
        for started in reversed(stacks):
            started.stop()
        if keep:
            print(f"kept {data_dir}", flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    args = parse(argv)
    with two_accounts(args.keep, "switchboard-billing-away-") as (stack, targets, notes):
        pairs = run_rounds(BillingProcess(stack), targets, args.rounds, args.duration)
        text = table(pairs, args.rounds, args.duration, notes)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / "billing-away.md").write_text(text + "\n")
        print(text, flush=True)
        return 0
