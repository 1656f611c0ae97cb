"""The harness: starts the stub and the targets, loads them interleaved, reports.

.venv/bin/python bench/run.py router [--rounds 3] [--duration 10] [--soak] [--profile]
.venv/bin/python bench/run.py flood [--rounds 3] [--duration 10] [--connections 4] [--case-seconds 3]
.venv/bin/python bench/run.py registry [args...]   # bench/registry_bench.py
.venv/bin/python bench/run.py billing [args...]    # bench/billing_bench.py
.venv/bin/python bench/run.py billing-away [--rounds 3] [--duration 10]   # bench/billing_away.py
.venv/bin/python bench/run.py limited [--rounds 3] [--duration 10]   # bench/limited.py
.venv/bin/python bench/run.py idle [--baseline <checkout>] [--seconds 20]   # bench/idle.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

from bench import flood as flooding
from bench import report as reporting
from bench import slowbody as slowbodies
from bench import soak as soaking
from bench import telemetry
from bench.load import SCENARIOS, Measurement, Scenario, measure
from bench.targets import (
    BENCH_DIR,
    Target,
    direct_target,
    start_baseline,
    start_floor,
    start_litellm,
    start_stub,
    start_switchboard,
)
from services.launcher import Stack

ROOT = BENCH_DIR.parent
KEY_LIMITS = "key-limits"  # Switchboard called with a key whose rate limits never bite
WARMUP_SECONDS = 3.0
WARMUP_ATTEMPTS = 3


def ensure_wrk() -> None:
    """Installs Debian's wrk when it is missing and we may (root with apt-get)."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: sudo apt-get install -y wrk")
    print("installing wrk with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wanted(args: argparse.Namespace) -> list[str]:
    """The targets a run needs: the soak loads Switchboard only; a profile-only run skips LiteLLM."""
    wanted = args.targets.split(",")
    if args.soak:
        return [t for t in wanted if t == "switchboard"]
    if args.rounds == 0:
        return [t for t in wanted if t != "litellm"]
    return wanted


def _start_optional(name: str, start: Callable[[], Target], notes: list[str]) -> Target | None:
    """Starts one target; a target that cannot start is reported, not fatal."""
    _log(f"starting {name} ...")
    try:
        return start()
    except Exception as exc:  # a broken target must not hide the others' figures
        notes.append(f"{name} did not start: {str(exc)[:400]}")
        _log(notes[-1])
        return None


def _warm_up(target: Target, scenario: Scenario) -> Measurement:
    """A short run; repeated while nothing answered yet (LiteLLM's first answer takes seconds)."""
    for _ in range(WARMUP_ATTEMPTS):
        try:
            warm = measure(target, scenario, WARMUP_SECONDS)
        except Exception as exc:
            return Measurement(0, 0, 1, 0, 0, 0, first_bad=str(exc)[:300])
        if warm.ok or warm.bad:
            return warm
    return Measurement(0, 0, 1, 0, 0, 0, first_bad=f"no answer within {WARMUP_ATTEMPTS} warm-up runs")


def usable(targets: list[Target], scenarios: list[Scenario], notes: list[str]) -> dict[str, list[Target]]:
    """Warm-up runs double as a correctness check: a target that gets a scenario wrong is left out of it."""
    plan: dict[str, list[Target]] = {}
    for scenario in scenarios:
        plan[scenario.name] = []
        for target in targets:
            warm = _warm_up(target, scenario)
            if warm.ok and not warm.bad:
                plan[scenario.name].append(target)
            else:
                example = warm.first_bad[:300]
                notes.append(f"{target.name} left out of {scenario.name}: {warm.bad} bad answers, e.g. {example}")
                _log(notes[-1])
    return plan


def run_rounds(plan: dict[str, list[Target]], scenarios: list[Scenario], report: reporting.Report) -> None:
    """A B C, A B C, ...: every round visits every scenario, each target in turn."""
    for rnd in range(1, report.rounds + 1):
        for scenario in scenarios:
            for target in plan[scenario.name]:
                m = measure(target, scenario, report.seconds)
                report.runs.append(reporting.Run(rnd, target.name, scenario.name, m))
                _log(
                    f"round {rnd} {scenario.name:13} {target.name:12} {m.rps:9.0f} req/s  p50 {m.p50_ms:8.2f} ms"
                    f"  p99 {m.p99_ms:8.2f} ms  bad {m.bad}"
                )


@contextmanager
def bench_stacks(keep: bool) -> Iterator[tuple[Path, Stack, list[Stack]]]:
    """A fresh data directory and the fixtures' stack (stub, floor, LiteLLM); every stack in the
    list (the fixtures first) is stopped afterwards, newest first."""
    ensure_wrk()
    data_dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    fixtures = Stack(data_dir / "fixtures", {**os.environ, "PYTHONPATH": str(ROOT)})
    stacks = [fixtures]
    try:
        yield data_dir, fixtures, stacks
    finally:
        for stack in reversed(stacks):
            stack.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            _log(f"kept {data_dir}")


def router_bench(args: argparse.Namespace) -> int:
    report = reporting.Report(rounds=args.rounds, seconds=args.duration)
    # The OTLP sink and the scraper outlast the stacks: the services send their last spans as they stop.
    with ExitStack() as resources, bench_stacks(args.keep) as (data_dir, fixtures, stacks):
        stub = start_stub(fixtures)
        targets = [direct_target(stub)]
        wanted = _wanted(args)

        def switchboard() -> Target:
            stack, target = start_switchboard(data_dir / "switchboard", stub, args.router_replicas)
            stacks.append(stack)
            return target

        def with_telemetry(name: str) -> Target:
            metrics, environment = name != telemetry.OFF, {}
            if name in telemetry.TRACING:
                environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = resources.enter_context(telemetry.otlp_sink())
                if ratio := telemetry.TRACING[name]:
                    environment["OTEL_TRACES_SAMPLER_ARG"] = ratio
            stack, target = start_switchboard(data_dir / name, stub, args.router_replicas, name, metrics, environment)
            stacks.append(stack)
            if metrics:
                resources.enter_context(telemetry.scraping(stack))
            return target

        def baseline() -> Target:
            stack, target = start_baseline(data_dir / "baseline", stub, args.baseline, args.router_replicas)
            stacks.append(stack)
            return target

        starters = {
            "floor": lambda: start_floor(fixtures, stub),
            "switchboard": switchboard,
            "litellm": lambda: start_litellm(fixtures, stub),
            "baseline": baseline,
            **{name: partial(with_telemetry, name) for name in (telemetry.OFF, *telemetry.MEASURED)},
        }
        for name, start in starters.items():
            if name in wanted and (target := _start_optional(name, start, report.notes)):
                targets.append(target)
        sb = next((t for t in targets if t.name == "switchboard"), None)
        if sb is not None and KEY_LIMITS in wanted:  # the same stack and caller, a token with rate limits
            targets.append(replace(sb, name=KEY_LIMITS, auth=sb.limited_auth))
        if args.soak:
            return _soak(sb, args.soak_minutes)
        if args.rounds > 0:
            _compare(targets, args, report)
        if args.profile:
            _profile([t for t in targets if t.name in ("floor", "switchboard")])
        return 0


def flood_bench(args: argparse.Namespace) -> int:
    """Chat callers with and without a flood of worst-case bodies: bench/flood.py."""
    with bench_stacks(args.keep) as (data_dir, fixtures, stacks):
        stub = start_stub(fixtures)
        _log("starting switchboard ...")
        stack, target = start_switchboard(data_dir / "switchboard", stub)
        stacks.append(stack)
        cases = [c for c in flooding.flood_cases(target) if not args.cases or c.name in args.cases.split(",")]
        report = flooding.FloodReport(
            args.rounds, args.duration, args.connections, cases, args.case_seconds, args.addresses
        )
        scenario = Scenario(f"chat-{args.connections}c", "chat", args.connections, "wrk")
        if not usable([target], [scenario], report.notes)[scenario.name]:
            raise SystemExit(f"Switchboard fails the warm-up: {report.notes}")
        flooding.flood_rounds(target, report, _log)
        written = report.write()
        print(report.table(), flush=True)
        _log("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))
        return 0 if report.floods_ok() else 1


def slowbody_bench(args: argparse.Namespace) -> int:
    """Envoy's memory and ordinary callers under the slow-body attack: bench/slowbody.py."""
    with bench_stacks(args.keep) as (data_dir, fixtures, _):
        stub = start_stub(fixtures)
        starters: list[tuple[str, Callable[[], tuple[Stack, Target]]]] = []
        if args.baseline:
            starters.append(("baseline", lambda: start_baseline(data_dir / "baseline", stub, args.baseline)))
        starters.append(("switchboard", lambda: start_switchboard(data_dir / "switchboard", stub)))
        scenario = Scenario(f"chat-{args.connections}c", "chat", args.connections, "wrk")
        kind, mib = "valid" if args.valid_token else "invalid", slowbodies.MIB
        attack = slowbodies.Attack(args.attackers, args.declared_mib * mib, args.sent_mib * mib, "", kind,
                                   args.guard_mib * mib, args.addresses)  # fmt: skip
        report = slowbodies.SlowBodyReport(attack, args.duration, args.connections)
        for name, start in starters:
            _log(f"starting {name} ...")
            stack, target = start()
            try:  # one stack at a time: the next starts with the machine's memory back
                if not usable([target], [scenario], report.notes)[scenario.name]:
                    raise SystemExit(f"{name} fails the warm-up: {report.notes}")
                attack.token = target.auth.removeprefix("Bearer ") if args.valid_token else "sb-not-a-token"
                report.phases.append(slowbodies.measure(target, attack, scenario, args.duration, _log))
            finally:
                stack.stop()
        written = report.write()
        print(report.table(), flush=True)
        _log("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))
        return 0


def _compare(targets: list[Target], args: argparse.Namespace, report: reporting.Report) -> None:
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios.split(",")]
    plan = usable(targets, scenarios, report.notes)
    run_rounds(plan, scenarios, report)
    wanted = args.targets.split(",")
    measures_telemetry = {telemetry.OFF, *telemetry.MEASURED} & set(wanted)
    paired = "router-telemetry" if measures_telemetry else "router-paired" if "baseline" in wanted else ""
    paired = paired or ("router-key-limits" if KEY_LIMITS in wanted else "")
    # A paired run keeps the committed table of the last full run.
    written = reporting.write(report, paired or "router")
    print(reporting.table(report), flush=True)
    _log("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))


def _profile(targets: list[Target]) -> None:
    from bench.spy import profile_under_load

    for target in targets:
        _log(f"profiling {target.name}'s Python processes under load with py-spy ...")
        for path in profile_under_load(target, [n for n in target.pids if "envoy" not in n]):
            _log(f"wrote {path.relative_to(ROOT)}")


def _soak(target: Target | None, minutes: float) -> int:
    if target is None:
        raise SystemExit("--soak needs Switchboard running")
    _log(f"soak: {minutes:g} min at 32 connections ...")
    result = soaking.soak(target, minutes * 60)
    soaking.write(result)
    print(result.table(), flush=True)
    return 0


def run_script(name: str, extra: list[str]) -> int:
    """Runs another helper's benchmark script (bench/<name>_bench.py) with this Python."""
    script = BENCH_DIR / f"{name}_bench.py"
    if not script.exists():
        _log(f"{script.relative_to(ROOT)} is not there yet")
        return 2
    return subprocess.run([sys.executable, str(script), *extra], cwd=ROOT, check=False).returncode


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    router = sub.add_parser("router", help="direct vs Switchboard vs LiteLLM through the same stub")
    router.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; 0: only --profile)")
    router.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    router.add_argument(
        "--targets",
        default="floor,switchboard,litellm",
        help="besides direct: switchboard, litellm, floor (Envoy + an empty forwarding Router), baseline, "
        f"{KEY_LIMITS} (with switchboard: the same stack called with a key whose rate limits never bite), "
        f"{telemetry.OFF}, {telemetry.METRICS}, {telemetry.ON}, {telemetry.ALWAYS} (the stack without metrics "
        "and tracing, with metrics, with both at the default trace ratio, with every request traced: what they cost)",
    )
    router.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit with its own .venv: target 'baseline' runs its stack, "
        "for paired before/after runs (add baseline to --targets)",
    )
    names = ", ".join(s.name for s in SCENARIOS)
    router.add_argument("--scenarios", default="", help=f"comma-separated subset of: {names}")
    router.add_argument("--profile", action="store_true", help="then py-spy the floor's and Switchboard's processes")
    router.add_argument("--soak", action="store_true", help="instead: RSS of Switchboard's processes under load")
    router.add_argument("--soak-minutes", type=float, default=10.0)
    router.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    router.add_argument("--router-replicas", type=int, default=1, help="Router processes behind Envoy (default 1)")
    flood = sub.add_parser("flood", help="chat callers while another client floods worst-case bodies")
    flood.add_argument("--rounds", type=int, default=3, help="rounds of (quiet, flood) (default 3)")
    flood.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    flood.add_argument("--connections", type=int, default=4, help="the callers' wrk connections (default 4)")
    flood.add_argument(
        "--case-seconds", type=float, default=3.0, help="each case floods alone first, for its CPU per request (0: no)"
    )
    flood.add_argument("--cases", default="", help="comma-separated subset of the flood's cases (default all)")
    flood.add_argument(
        "--addresses", type=int, default=1, help="the flood's connections from this many client addresses, in turn"
    )
    flood.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    slow = sub.add_parser("slowbody", help="Envoy's memory and ordinary callers under held large bodies")
    slow.add_argument("--attackers", type=int, default=1000, help="held connections (default 1000)")
    slow.add_argument("--declared-mib", type=int, default=8, help="each declares this body size (default 8)")
    slow.add_argument("--sent-mib", type=int, default=7, help="and sends this much of it (default 7)")
    slow.add_argument("--addresses", type=int, default=1, help="client addresses 127.0.0.2, ... (max 250)")
    slow.add_argument("--valid-token", action="store_true", help="a valid token instead of an invalid one")
    slow.add_argument("--guard-mib", type=int, default=8192, help="sending stops past this Envoy RSS (8192)")
    slow.add_argument("--duration", type=float, default=10.0, help="seconds per callers' run (default 10)")
    slow.add_argument("--connections", type=int, default=4, help="the callers' wrk connections (default 4)")
    slow.add_argument("--baseline", type=Path, help="also: the stack of an earlier checkout with its own .venv")
    slow.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    for name in ("registry", "billing", "client", "translate", "cold", "servicer"):
        sub.add_parser(name, help=f"bench/{name}_bench.py (arguments are passed on)", add_help=False)
    sub.add_parser(
        "billing-away", help="throughput with Billing hung over healthy (bench/billing_away.py)", add_help=False
    )
    sub.add_parser("limited", help="a limited account's throughput over an unlimited one's (bench/limited.py)",
                   add_help=False)  # fmt: skip
    sub.add_parser("idle", help="CPU per second of an idle stack's processes (bench/idle.py)", add_help=False)
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(argv)
    if args.command == "router":
        if extra:
            raise SystemExit(f"unknown arguments: {' '.join(extra)}")
        return router_bench(args)
    if args.command == "billing-away":
        from bench.billing_away import main as billing_away  # it imports this module

        return billing_away(extra)
    if args.command == "limited":
        from bench.limited import main as limited  # it imports this module

        return limited(extra)
    if args.command == "idle":
        from bench.idle import main as idle

        return idle(extra)
    if args.command == "flood":
        return flood_bench(args)
    if args.command == "slowbody":
        return slowbody_bench(args)
    return run_script(args.command, extra)
