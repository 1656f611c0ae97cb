"""Medians over rounds, the table, the goals of SPEC.md, and the JSON and PNG under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import SCENARIOS, Measurement
from bench.stub import PACED_GAP_SECONDS, PACED_SPAN_SECONDS
from bench.telemetry import ALWAYS, MEASURED, METRICS, OFF, ON, TRACING_COMPARED, Cost, cost

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KEY_LIMITS = "key-limits"  # Switchboard with a key whose rate limits never bite (bench/harness.py)
TARGET_ORDER = ["direct", "floor", "baseline", "switchboard", KEY_LIMITS, OFF, METRICS, ON, ALWAYS, "litellm"]
# What each measured target adds over its reference, in the same run.
COMPARED = [*((target, OFF) for target in MEASURED), *TRACING_COMPARED, (KEY_LIMITS, "switchboard")]


@dataclass
class Run:
    """One measurement, tagged with its round, target and scenario."""

    round: int
    target: str
    scenario: str
    measurement: Measurement


@dataclass
class Summary:
    """Medians over rounds for one target in one scenario."""

    rps: float
    p50_ms: float
    p99_ms: float
    added_p50_ms: float | None  # over direct, median of per-round differences
    bad: int
    requests: int
    spread_ms: float
    first_bad: str = ""
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    """Everything one harness run measured."""

    rounds: int
    seconds: float
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def targets(self) -> list[str]:
        seen = {r.target for r in self.runs}
        return [t for t in TARGET_ORDER if t in seen]

    def _by_round(self, target: str, scenario: str) -> dict[int, Measurement]:
        return {r.round: r.measurement for r in self.runs if r.target == target and r.scenario == scenario}

    def summary(self, target: str, scenario: str) -> Summary | None:
        mine = self._by_round(target, scenario)
        if not mine:
            return None
        good = [m for m in mine.values() if m.ok]
        direct = self._by_round("direct", scenario)
        added = [m.p50_ms - direct[rnd].p50_ms for rnd, m in mine.items() if m.ok and rnd in direct and direct[rnd].ok]

        def median(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        return Summary(
            rps=median([m.rps for m in good]),
            p50_ms=median([m.p50_ms for m in good]),
            p99_ms=median([m.p99_ms for m in good]),
            added_p50_ms=median(added) if added and target != "direct" else None,
            bad=sum(m.bad for m in mine.values()),
            requests=sum(m.requests for m in mine.values()),
            spread_ms=median([m.spread_ms for m in good]),
            first_bad=next((m.first_bad for m in mine.values() if m.first_bad), ""),
            cpu_ms_per_request={
                name: median([m.cpu_ms_per_request[name] for m in good if name in m.cpu_ms_per_request])
                for name in (good[0].cpu_ms_per_request if good else {})
            },
        )

    def ratio(self, scenario: str, metric: str) -> float | None:
        """Switchboard / LiteLLM for one metric of one scenario."""
        ours, theirs = self.summary("switchboard", scenario), self.summary("litellm", scenario)
        if not ours or not theirs or not getattr(theirs, metric) or not getattr(ours, metric):
            return None
        return getattr(ours, metric) / getattr(theirs, metric)

    def goals(self) -> list[tuple[str, str, bool | None]]:
        """(goal, measured, met?) for SPEC.md's figures; None where it could not be measured."""
        out: list[tuple[str, str, bool | None]] = []
        chat1 = self.summary("switchboard", "chat-1c")
        if chat1 and chat1.added_p50_ms is not None and not chat1.bad:
            out.append(("added p50 at 1 connection <= 1 ms", f"{chat1.added_p50_ms:.2f} ms", chat1.added_p50_ms <= 1))
        else:
            out.append(("added p50 at 1 connection <= 1 ms", "not measured", None))
        rps_ratio = self.ratio("chat-32c", "rps")
        ours32, theirs32 = self.summary("switchboard", "chat-32c"), self.summary("litellm", "chat-32c")
        if rps_ratio is not None and ours32 and theirs32 and not ours32.bad:
            out.append(("req/s at 32 connections >= 10x LiteLLM", f"{rps_ratio:.1f}x", rps_ratio >= 10))
            out.append(
                (
                    "p99 at 32 connections < LiteLLM's p50",
                    f"{ours32.p99_ms:.1f} ms vs {theirs32.p50_ms:.1f} ms",
                    ours32.p99_ms < theirs32.p50_ms,
                )
            )
        else:
            out += [("req/s at 32 connections >= 10x LiteLLM", "not measured", None)]
            out += [("p99 at 32 connections < LiteLLM's p50", "not measured", None)]
        ttfb = self.summary("switchboard", "stream-ttfb")
        if ttfb and ttfb.added_p50_ms is not None and not ttfb.bad:
            out.append(("streaming TTFB adds <= 2 ms", f"{ttfb.added_p50_ms:.2f} ms", ttfb.added_p50_ms <= 2))
        else:
            out.append(("streaming TTFB adds <= 2 ms", "not measured", None))
        paced = self.summary("switchboard", "stream-paced")
        if paced and paced.spread_ms and not paced.bad:
            expected = PACED_SPAN_SECONDS * 1000
            passed = paced.p50_ms < PACED_GAP_SECONDS * 1000 and paced.spread_ms >= 0.8 * expected
            measured = f"first chunk {paced.p50_ms:.1f} ms, end {paced.spread_ms:.0f} ms later (paced {expected:.0f})"
            out.append(("paced chunks passed on as they arrive", measured, passed))
        else:
            out.append(("paced chunks passed on as they arrive", "not measured", None))
        return out

    def issue_goals(self) -> list[tuple[str, str, bool | None]]:
        """(goal, measured, met?) for issue 22's figures: against the floor and LiteLLM in this run."""
        sb = {name: self.summary("switchboard", name) for name in ("chat-1c", "chat-32c", "stream-ttfb")}
        floor = {name: self.summary("floor", name) for name in sb}
        out: list[tuple[str, str, bool | None]] = []
        for name, what in (("chat-1c", "chat-1c added p50"), ("stream-ttfb", "stream TTFB added")):
            ours, theirs = sb[name], floor[name]
            goal = f"{what} <= floor's + 0.15 ms"
            if ours and theirs and ours.added_p50_ms is not None and theirs.added_p50_ms is not None:
                gap = ours.added_p50_ms - theirs.added_p50_ms
                measured = f"{ours.added_p50_ms:.2f} vs {theirs.added_p50_ms:.2f} ms: floor {gap:+.2f} ms"
                out.append((goal, measured, gap <= 0.15))
            else:
                out.append((goal, "not measured", None))
        ours, theirs, litellm = sb["chat-32c"], floor["chat-32c"], self.summary("litellm", "chat-32c")
        if ours and theirs and theirs.rps:
            share = ours.rps / theirs.rps
            out.append(
                ("chat-32c req/s >= 0.8x floor", f"{ours.rps:.0f} vs {theirs.rps:.0f}: {share:.2f}x", share >= 0.8)
            )
        else:
            out.append(("chat-32c req/s >= 0.8x floor", "not measured", None))
        if ours and litellm and litellm.rps and not ours.bad:
            times = ours.rps / litellm.rps
            out.append(
                ("chat-32c req/s >= 20x LiteLLM", f"{ours.rps:.0f} vs {litellm.rps:.1f}: {times:.1f}x", times >= 20)
            )
            measured = f"{ours.p99_ms:.1f} vs {litellm.p50_ms:.1f} ms"
            out.append(("chat-32c p99 < LiteLLM's p50", measured, ours.p99_ms < litellm.p50_ms))
        else:
            out += [
                (goal, "not measured", None)
                for goal in ("chat-32c req/s >= 20x LiteLLM", "chat-32c p99 < LiteLLM's p50")
            ]
        tracing = self.added_cost(ON, METRICS, "chat-1c")
        goal = "chat-1c tracing at the default ratio adds <= 0.1 ms at p50 over tracing off"
        if tracing:
            out.append((goal, f"{tracing.added_p50_ms:+.3f} ms ({tracing.rounds} rounds)", tracing.added_p50_ms <= 0.1))
        else:
            out.append((goal, "not measured", None))
        return out

    def added_cost(self, target: str, reference: str, scenario: str) -> Cost | None:
        """What a target adds to a request over its reference (a telemetry target over telemetry-off,
        a key with rate limits over one without)."""

        def latencies(name: str) -> dict[int, tuple[float, ...]]:
            runs = self._by_round(name, scenario).items()
            return {rnd: (m.p50_ms, m.p99_ms, sum(m.cpu_ms_per_request.values())) for rnd, m in runs if m.ok}

        return cost(latencies(target), latencies(reference))

    def added_costs(self) -> list[tuple[str, str, str, Cost]]:
        """(scenario, target, reference, cost) of every compared target measured."""
        pairs = [(sc.name, target, reference) for sc in SCENARIOS for target, reference in COMPARED]
        return [(s, t, r, c) for s, t, r in pairs if (c := self.added_cost(t, r, s))]

    def meta(self) -> dict:
        return run_meta(self.rounds, self.seconds)


def run_meta(rounds: int, seconds: float) -> dict:
    """When, on what machine, and how long a benchmark ran: the header of every results file."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_model()}",
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()],  # other work on the machine, at the end
        "rounds": rounds,
        "seconds_per_run": seconds,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(report: Report) -> str:
    """The table as Markdown (readable in a terminal too)."""
    meta = report.meta()
    lines = [
        f"Router benchmark, {meta['date']}: {meta['cores']} cores ({meta['machine']}), "
        f"{meta['rounds']} interleaved rounds x {meta['seconds_per_run']:g} s, medians over rounds; load average "
        + "/".join(f"{x:g}" for x in meta["load_average_1_5_15"])
        + " (1/5/15 min) at the end.",
        "Streaming rows: p50/p99 are time to first byte; req/s is sequential streams.",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | bad/total |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        for target in report.targets():
            s = report.summary(target, scenario.name)
            if s is None:
                continue
            lines.append(
                f"| {scenario.name} | {target} | {s.rps:.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | "
                f"{_fmt(s.added_p50_ms)} | {s.bad}/{s.requests} |"
            )
    ratio_rows = []
    for scenario in SCENARIOS:
        ratios = [report.ratio(scenario.name, m) for m in ("rps", "p50_ms", "p99_ms")]
        if any(r is not None for r in ratios):
            ratio_rows.append(f"| {scenario.name} | " + " | ".join(_fmt(r, ".2f") + "x" for r in ratios) + " |")
    if ratio_rows:
        lines += ["", "| scenario | Switchboard/LiteLLM req/s | p50 | p99 |", "|---|---:|---:|---:|", *ratio_rows]
    lines += ["", "CPU time per answer (ms, median over rounds), by process:", ""]
    lines += ["| scenario | target | CPU ms per answer |", "|---|---|---|"]
    for scenario in SCENARIOS:
        for target in report.targets():
            s = report.summary(target, scenario.name)
            if s and s.cpu_ms_per_request:
                parts = ", ".join(f"{name} {ms:.3f}" for name, ms in s.cpu_ms_per_request.items())
                total = sum(s.cpu_ms_per_request.values())
                lines.append(f"| {scenario.name} | {target} | {parts} (total {total:.3f}) |")
    if costs := report.added_costs():
        lines += ["", f"What telemetry ({METRICS}: metrics, {ON}: metrics and tracing at the default ratio, {ALWAYS}:"]
        lines += [f"metrics and tracing every request; over {OFF}, or over {METRICS}: tracing alone) and a key's"]
        lines += [f"rate limits ({KEY_LIMITS} over switchboard) cost: median of the per-round differences:", ""]
        lines += ["| scenario | target | over | added p50 ms | added p99 ms | added CPU ms per answer | rounds |"]
        lines += ["|---|---|---|---:|---:|---:|---:|"]
        lines += [
            f"| {s} | {t} | {r} | {c.added_p50_ms:.3f} | {c.added_p99_ms:.3f} | {c.added_cpu_ms:.3f} | {c.rounds} |"
            for s, t, r, c in costs
        ]
    for title, goals in (("goal (SPEC.md)", report.goals()), ("goal (issue 22, same run)", report.issue_goals())):
        lines += ["", f"| {title} | measured | met |", "|---|---|---|"]
        lines += [
            f"| {goal} | {measured} | {'-' if met is None else 'yes' if met else 'NO'} |"
            for goal, measured, met in goals
        ]
    bad = [(t, sc.name, s.first_bad) for sc in SCENARIOS for t in report.targets() if (s := report.summary(t, sc.name))]
    problems = [f"- {t} {sc}: first bad answer: {fb[:200]}" for t, sc, fb in bad if fb]
    if problems or report.notes:
        lines += ["", *problems, *(f"- {n}" for n in report.notes)]
    return "\n".join(lines)


def to_json(report: Report) -> dict:
    summaries = {
        sc.name: {t: vars(s) for t in report.targets() if (s := report.summary(t, sc.name))} for sc in SCENARIOS
    }
    ratios = {sc.name: {m: report.ratio(sc.name, m) for m in ("rps", "p50_ms", "p99_ms")} for sc in SCENARIOS}
    return {
        "meta": report.meta(),
        "summary": summaries,
        "switchboard_over_litellm": ratios,
        "added_cost": [{"scenario": s, "target": t, "over": r, **vars(c)} for s, t, r, c in report.added_costs()],
        "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in report.goals()],
        "issue_goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in report.issue_goals()],
        "runs": [
            {"round": r.round, "target": r.target, "scenario": r.scenario, **r.measurement.to_json()}
            for r in report.runs
        ],
        "notes": report.notes,
    }


def plot(report: Report, path: Path) -> None:
    """Grouped bars per scenario: req/s (log scale), p50 and p99 per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = report.targets()
    names = [sc.name for sc in SCENARIOS]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    width = 0.8 / max(1, len(targets))
    for ax, metric, title in zip(
        axes, ("rps", "p50_ms", "p99_ms"), ("requests/s (log)", "p50 ms (log)", "p99 ms (log)"), strict=True
    ):
        for i, target in enumerate(targets):
            values = [getattr(report.summary(target, n), metric, 0) if report.summary(target, n) else 0 for n in names]
            ax.bar([x + i * width for x in range(len(names))], values, width, label=target)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names, rotation=20, fontsize=8)
    axes[0].legend()
    meta = report.meta()
    fig.suptitle(f"Switchboard vs LiteLLM vs direct: {meta['date']}, {meta['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: Report, stem: str = "router") -> list[Path]:
    """Writes <stem>.json, <stem>.md and <stem>.png under bench/results/; returns the paths."""
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path, md_path, png_path = (RESULTS_DIR / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    md_path.write_text(table(report) + "\n")
    written = [json_path, md_path]
    try:
        plot(report, png_path)
        written.append(png_path)
    except ImportError:
        report.notes.append("no PNG: matplotlib is missing (pip install -e '.[bench]')")
    return written
