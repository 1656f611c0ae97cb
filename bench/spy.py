"""py-spy profiles of Switchboard's Python processes while wrk loads the Router:
a flame graph (SVG) per process and a text summary of where the samples fall."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.load import Scenario, run_wrk
from bench.report import RESULTS_DIR
from bench.targets import Target

PROFILE_SECONDS = 20
SAMPLE_RATE = 250
TOP = 25


def py_spy() -> str:
    """The py-spy command next to this Python (pip install -e '.[bench]')."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is missing: .venv/bin/pip install -e '.[bench]'")
    return found


def _record(name: str, pid: int, fmt: str, suffix: str, *options: str) -> Path:
    out = RESULTS_DIR / f"{name}-profile.{suffix}"
    argv = [py_spy(), "record", "-d", str(PROFILE_SECONDS), "-r", str(SAMPLE_RATE), "-f", fmt, "-o", str(out), *options]
    subprocess.run([*argv, "--pid", str(pid)], check=True, capture_output=True, timeout=PROFILE_SECONDS + 60)
    return out


def _profile_one(name: str, pid: int) -> Path:
    """A flame graph of every thread, then the GIL holder's stacks summarised into <name>-profile.txt.

    Only the GIL holder counts in the summary: threads blocked in C (gRPC's poller, idle
    executor workers) would otherwise show up as busy."""
    _record(name, pid, "flamegraph", "svg")
    raw = _record(name, pid, "raw", "collapsed", "--gil")
    summary = RESULTS_DIR / f"{name}-profile.txt"
    summary.write_text(summarise(raw.read_text()))
    return summary


def summarise(collapsed: str) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"

    def block(title: str, counter: collections.Counter[str]) -> list[str]:
        rows = [f"{100 * n / total:6.1f}%  {frame}" for frame, n in counter.most_common(TOP)]
        return [title, *rows, ""]

    held = 100 * total / (SAMPLE_RATE * PROFILE_SECONDS)
    head = [
        f"{total} samples of the GIL holder at {SAMPLE_RATE}/s over {PROFILE_SECONDS}s of load "
        f"(GIL held ~{held:.0f}% of the time); shares are of GIL-held time",
        "",
    ]
    return "\n".join(head + block("self time:", own) + block("inclusive time:", inclusive))


def profile_under_load(target: Target, names: list[str], connections: int = 32) -> list[Path]:
    """Loads `target` with chat at `connections` while py-spy samples each named process."""
    RESULTS_DIR.mkdir(exist_ok=True)
    scenario = Scenario(f"chat-{connections}c", "chat", connections, "wrk")
    pids = {name: target.pids[name] for name in names if name in target.pids}
    with ThreadPoolExecutor(max_workers=len(pids) + 1) as pool:
        load = pool.submit(run_wrk, target, scenario, 2 * PROFILE_SECONDS + 15)
        profiles = [pool.submit(_profile_one, name, pid) for name, pid in pids.items()]
        written = [p.result() for p in profiles]
        load.result()
    return written
