"""What an idle stack costs: the CPU each process of a stack uses per second while nothing calls it.

    .venv/bin/python bench/run.py idle [--baseline <checkout with its own .venv>] [--rounds 3] [--seconds 20]
        [--settle 10] [--keep]

The stack starts as the tests start theirs (services.launcher.start_stack, probes off, the tests' large-body
budgets, metrics on); with --baseline, the stack of that checkout (its own .venv and code) starts too and both
are measured in the same windows, side by side. Each stack runs under a holder process of its checkout's
Python (as the tests hold theirs in pytest's process). After --settle seconds, each round reads every
process's user + system CPU time (/proc/<pid>/stat) at the start and end of a --seconds window; the table
gives the median over rounds, in ms of CPU per second of wall time. Output: results/idle.md, results/idle.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import cpu_seconds
from bench.report import RESULTS_DIR, run_meta
from bench.stub import StubPorts
from bench.targets import AdminClient, register_switchboard

ROOT = Path(__file__).resolve().parent.parent
CURRENT = "switchboard"
BASELINE = "baseline"
READY_SECONDS = 180.0

# Run by each checkout's own Python in its own directory: starts a stack with the tests' settings
# (tests/helpers/stacks.py), prints its children's pids, URL and admin token as one JSON line, stops it
# when stdin closes.
HOLDER = r"""
import json, secrets, sys
from pathlib import Path
from edge.limits import CLIENT_BUDGET_ENV, EDGE_BUDGET_ENV
from services.launcher import UpOptions, free_port, start_stack

settings = {
    "SWITCHBOARD_ADMIN_TOKEN": "idle-admin-" + secrets.token_hex(16),
    "SWITCHBOARD_PROBES_ENABLED": "false",
    CLIENT_BUDGET_ENV: "1024,1024",
    EDGE_BUDGET_ENV: "1024,1024",
}
port = free_port()
options = UpOptions(port, Path(sys.argv[1]), "", demo=False, environment=settings, ready_seconds=float(sys.argv[2]))
stack, token, _ = start_stack(options)
try:
    pids = {c.name: c.process.pid for c in stack.children}
    print(json.dumps({"pids": pids, "base_url": f"http://127.0.0.1:{port}", "admin_token": token}), flush=True)
    sys.stdin.read()
finally:
    stack.stop()
"""


@dataclass
class Held:
    """A stack started by a holder process, and its children's pids by name."""

    name: str
    holder: subprocess.Popen
    pids: dict[str, int]
    base_url: str
    admin_token: str


@dataclass
class IdleReport:
    seconds: float
    settle: float
    populate: int
    rounds: list[dict[str, dict[str, float]]] = field(default_factory=list)  # stack -> process -> ms/s

    def median(self, stack: str, process: str) -> str:
        values = [r[stack][process] for r in self.rounds if process in r[stack]]
        return f"{statistics.median(values):.1f}" if values else "-"

    def total(self, stack: str) -> float:
        return statistics.median(sum(r[stack].values()) for r in self.rounds)

    def table(self, stacks: dict[str, str], processes: list[str], meta: dict) -> str:
        """The table; `stacks`: name -> the commit it ran."""
        written = (
            f"{self.populate} x (an org, a user, tokens, 5 providers, 5 catalog models, 5 mappings) written to each"
            if self.populate
            else "nothing written to them"
        )
        commits = ", ".join(f"{name} at {commit}" for name, commit in stacks.items())
        load = "/".join(f"{x:g}" for x in meta["load_average_1_5_15"])
        lines = [
            f"Idle stacks, {meta['date']}: {meta['cores']} cores ({meta['machine']}); {commits}, side by side; "
            f"{written}; {len(self.rounds)} rounds x {self.seconds:g} s after {self.settle:g} s of settling, "
            f"medians over rounds (resolution: 10 ms of CPU per window). Load average {load} (1/5/15 min) at the end.",
            "",
            "CPU ms per second of wall time, by process:",
            "",
            "| process | " + " | ".join(stacks) + " |",
            "|---|" + "---:|" * len(stacks),
        ]
        for process in processes:
            lines.append(f"| {process} | " + " | ".join(self.median(s, process) for s in stacks) + " |")
        lines.append("| **total** | " + " | ".join(f"**{self.total(s):.1f}**" for s in stacks) + " |")
        per_round = "; ".join(f"{s} " + ", ".join(f"{sum(r[s].values()):.1f}" for r in self.rounds) for s in stacks)
        return "\n".join([*lines, "", f"Totals per round (ms/s): {per_round}."])


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def hold(name: str, checkout: Path, data_dir: Path) -> Held:
    """Starts `checkout`'s stack under a holder running that checkout's Python in its directory."""
    python = checkout / ".venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [str(python), "-c", HOLDER, str(data_dir), str(READY_SECONDS)]
    holder = subprocess.Popen(argv, cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline() if holder.stdout else ""
    if not line:
        holder.wait()
        raise SystemExit(f"{name}'s stack did not start (logs under {data_dir / 'logs'})")
    started = json.loads(line)
    return Held(name, holder, started["pids"], started["base_url"], started["admin_token"])


def populate(held: Held, times: int) -> None:
    """Writes what a test module might: `times` x (an org, a user, tokens, and per kind of request a
    provider, a catalog model and a mapping); the providers point at a closed port (probes are off)."""
    nowhere = StubPorts(admin=1, unary=1, stream=1, paced=1)
    for _ in range(times):
        register_switchboard(AdminClient(held.base_url, held.admin_token), nowhere)


def release(held: Held) -> None:
    if held.holder.stdin:
        held.holder.stdin.close()  # the holder stops its stack
    held.holder.wait()


def measure(stacks: list[Held], seconds: float) -> dict[str, dict[str, float]]:
    """One window: ms of CPU per second of wall time of every process of every stack."""
    before = {s.name: {p: cpu_seconds(pid) for p, pid in s.pids.items()} for s in stacks}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        s.name: {p: 1000 * (cpu_seconds(pid) - before[s.name][p]) / elapsed for p, pid in s.pids.items()}
        for s in stacks
    }


def _commit(checkout: Path) -> str:
    """The checkout's commit (short), marked when its tree differs from it."""
    git = ["git", "-C", str(checkout)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                             check=False)  # fmt: skip
    return head.stdout.strip() + (" with uncommitted changes" if changed.stdout.strip() else "")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="also: the stack of an earlier checkout with its own .venv")
    parser.add_argument("--rounds", type=int, default=3, help="measured windows (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per window (default 20)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the start before measuring")
    parser.add_argument(
        "--populate", type=int, default=10, help="write this many sets of orgs, users, providers, models (default 10)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="switchboard-idle-"))
    checkouts = ([(BASELINE, args.baseline.resolve())] if args.baseline else []) + [(CURRENT, ROOT)]
    held: list[Held] = []
    try:
        for name, checkout in checkouts:
            _log(f"starting {name} ({checkout}) ...")
            held.append(hold(name, checkout, data_dir / name))
            populate(held[-1], args.populate)
        _log(f"settling {args.settle:g} s ...")
        time.sleep(args.settle)
        report = IdleReport(args.seconds, args.settle, args.populate)
        for rnd in range(1, args.rounds + 1):
            report.rounds.append(measure(held, args.seconds))
            totals = ", ".join(f"{s} {sum(v.values()):.1f}" for s, v in report.rounds[-1].items())
            _log(f"round {rnd}: total ms/s {totals}")
    finally:
        for stack in reversed(held):
            release(stack)
        if args.keep:
            _log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    stacks = {s.name: _commit(checkout) for s, (_, checkout) in zip(held, checkouts, strict=True)}
    processes = list(dict.fromkeys(p for s in held for p in s.pids))
    meta = run_meta(args.rounds, args.seconds)
    text = report.table(stacks, processes, meta)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "idle.md").write_text(text + "\n")
    (RESULTS_DIR / "idle.json").write_text(
        json.dumps({**meta, "settle": args.settle, "populate": args.populate, "windows": report.rounds}) + "\n"
    )
    print(text, flush=True)
    return 0
