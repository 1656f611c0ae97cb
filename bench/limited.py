"""A limited account against an unlimited one (issue 22): the same caller's chat-32c with and without a
spending limit (never reached), interleaved in one run on one stack.

    .venv/bin/python bench/run.py limited [--rounds 3] [--duration 10] [--keep]

An account without a limit never makes the Router ask Billing; one with a limit reserves every
request's estimate first. The table gives req/s of both, their ratio per round (median; goal >= 0.9)
and the CPU Billing and the Router spent per answer (the steadier figure on a shared machine).
"""

from __future__ import annotations

import os
import statistics

from bench.billing_away import SCENARIO, parse, two_accounts
from bench.load import Measurement, measure
from bench.report import RESULTS_DIR, Report
from bench.targets import Target

GOAL = 0.9
UNLIMITED, LIMITED = "no limit", "with a limit"


def run_rounds(targets: list[Target], rounds: int, seconds: float) -> dict[str, list[Measurement]]:
    runs: dict[str, list[Measurement]] = {t.name: [] for t in targets}
    for rnd in range(1, rounds + 1):
        for target in targets:
            m = measure(target, SCENARIO, seconds)
            runs[target.name].append(m)
            cpu = m.cpu_ms_per_request
            print(f"round {rnd} {target.name:12} {m.rps:6.0f} req/s  p99 {m.p99_ms:6.1f} ms  CPU ms/answer: billing "
                  f"{cpu.get('billing', 0):.3f} router {cpu.get('router', 0):.3f}  bad {m.bad}",
                  flush=True)  # fmt: skip
    return runs


def _cpu(measurements: list[Measurement], process: str) -> float:
    return statistics.median(m.cpu_ms_per_request.get(process, 0.0) for m in measurements)


def table(runs: dict[str, list[Measurement]], rounds: int, seconds: float, notes: list[str]) -> str:
    meta = Report(rounds, seconds).meta()
    ratios = [lim.rps / free.rps for lim, free in zip(runs[LIMITED], runs[UNLIMITED], strict=True) if free.rps]
    ratio = statistics.median(ratios) if ratios else 0.0
    lines = [
        f"Limited account, {meta['date']}: {meta['cores']} cores ({meta['machine']}), {rounds} interleaved rounds x "
        f"{seconds:g} s, {SCENARIO.name} (wrk, {SCENARIO.connections} connections), medians over rounds.",
        f"Load average at the end (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine).",
        "",
        "| account | req/s | p50 ms | p99 ms | Billing CPU ms per answer | Router CPU ms per answer | bad/total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, measured in runs.items():
        bad, total = sum(m.bad for m in measured), sum(m.requests for m in measured)
        p50, p99 = statistics.median(m.p50_ms for m in measured), statistics.median(m.p99_ms for m in measured)
        lines.append(
            f"| {name} | {statistics.median(m.rps for m in measured):.0f} | {p50:.2f} | {p99:.1f} "
            f"| {_cpu(measured, 'billing'):.3f} | {_cpu(measured, 'router'):.3f} | {bad}/{total} |"
        )
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    lines += ["", f"limited / unlimited req/s: {ratio:.2f} (rounds: {per_round}); goal >= {GOAL}: "
              f"{'yes' if ratio >= GOAL else 'NO'}"]  # fmt: skip
    return "\n".join(lines + [f"- {note}" for note in notes])


def main(argv: list[str]) -> int:
    args = parse(argv, "bench/run.py limited", __doc__)
    with two_accounts(args.keep, "switchboard-limited-") as (_, targets, notes):
        text = table(run_rounds(targets, args.rounds, args.duration), args.rounds, args.duration, notes)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / "limited.md").write_text(text + "\n")
        print(text, flush=True)
        return 0
