"""`--soak`: a long run at 32 connections against Switchboard, sampling the
resident memory of every Switchboard process from /proc."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Measurement, Scenario, run_wrk
from bench.report import RESULTS_DIR
from bench.targets import Target

SAMPLE_EVERY_SECONDS = 5.0
WARMUP_SECONDS = 30.0  # the first sample after warm-up is "start": caches and pools fill up first
FLAT_WITHIN = 0.10


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class SoakResult:
    """RSS samples per process and the load's own result."""

    seconds: float
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    load: Measurement | None = None

    def verdicts(self) -> dict[str, dict]:
        out = {}
        for name, series in self.samples.items():
            after = [rss for t, rss in series if t >= WARMUP_SECONDS] or [rss for _, rss in series]
            start, end, peak = after[0], after[-1], max(after)
            out[name] = {
                "start_mb": start / 2**20,
                "end_mb": end / 2**20,
                "max_mb": peak / 2**20,
                "growth_pct": 100 * (end - start) / start,
                "flat": peak <= start * (1 + FLAT_WITHIN),
            }
        return out

    def table(self) -> str:
        lines = [
            f"Soak: {self.seconds / 60:g} min at 32 connections (chat) against Switchboard; RSS sampled every "
            f"{SAMPLE_EVERY_SECONDS:g} s, start = first sample after {WARMUP_SECONDS:g} s of warm-up.",
            "",
            "| process | start MB | end MB | max MB | end vs start | flat (max within 10 %) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, v in self.verdicts().items():
            lines.append(
                f"| {name} | {v['start_mb']:.1f} | {v['end_mb']:.1f} | {v['max_mb']:.1f} | "
                f"{v['growth_pct']:+.1f} % | {'yes' if v['flat'] else 'NO'} |"
            )
        if self.load:
            m = self.load
            load = f"{m.rps:.0f} req/s, p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms, bad {m.bad}/{m.requests}"
            lines += ["", f"Load: {load}"]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "seconds": self.seconds,
            "verdicts": self.verdicts(),
            "samples": self.samples,
            "load": self.load.to_json() if self.load else None,
        }


def soak(target: Target, seconds: float) -> SoakResult:
    """Loads `target` for `seconds` while sampling RSS of each of its processes."""
    result = SoakResult(seconds, {name: [] for name in target.pids})
    scenario = Scenario("chat-32c", "chat", 32, "wrk")
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        load = pool.submit(run_wrk, target, scenario, seconds)
        while not load.done():
            elapsed = time.monotonic() - started
            for name, pid in target.pids.items():
                result.samples[name].append((round(elapsed, 1), rss_bytes(pid)))
            wait([load], timeout=SAMPLE_EVERY_SECONDS)
        result.load = load.result()
    return result


def write(result: SoakResult) -> list[Path]:
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path, md_path = RESULTS_DIR / "soak.json", RESULTS_DIR / "soak.md"
    json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    md_path.write_text(result.table() + "\n")
    return [json_path, md_path]
