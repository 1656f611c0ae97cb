"""What translating another API to chat completions costs: the same stack, model and stub upstream
answer chat, OpenAI's Responses API and Anthropic's Messages API, interleaved in one run.

    .venv/bin/python bench/run.py translate [--rounds 3] [--duration 10] [--keep]

Per round and API: unary at one connection (wrk, every answer checked for the API's shape and the
stub's text) and sequential streams (time to first byte, and to the end of the stream; every stream
checked for the API's events). The overhead of a translated API is the median over rounds of its
p50 minus chat's p50 in the same round (goal: at most 0.1 ms). Output: bench/results/translate.md
and translate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not bench/

from bench.harness import bench_stacks  # noqa: E402
from bench.load import CHAT_EXPECT, STREAM_EXPECT, Scenario, StreamAsk, request_body, run_streams, run_wrk  # noqa: E402
from bench.report import RESULTS_DIR, run_meta  # noqa: E402
from bench.targets import Target, start_stub, start_switchboard  # noqa: E402

GOAL_MS = 0.1
UNARY = Scenario("unary-1c", "chat", 1, "wrk")
STREAM = Scenario("stream", "stream", 1, "stream")
PROMPT = "Say hello."


@dataclass(frozen=True)
class Api:
    """One API: its path, its bodies for a model, and what its answers must contain."""

    name: str
    path: str
    unary_expect: str
    stream_expect: tuple[str, ...]

    def body(self, target: Target, kind: str, stream: bool) -> str:
        model = target.models[kind]
        if self.name == "responses":
            return json.dumps({"model": model, "input": PROMPT, "max_output_tokens": 16, "stream": stream})
        if self.name == "messages":
            messages = [{"role": "user", "content": PROMPT}]
            return json.dumps({"model": model, "max_tokens": 16, "messages": messages, "stream": stream})
        return request_body(target, kind, stream)


APIS = (
    Api("chat", "/v1/chat/completions", CHAT_EXPECT, STREAM_EXPECT),
    Api("responses", "/v1/responses", '"object":"response"|Hello from the stub.',
        ("response.output_text.delta", "response.completed")),
    Api("messages", "/v1/messages", '"type":"message"|Hello from the stub.', ("content_block_delta", "message_stop")),
)  # fmt: skip


@dataclass
class Sample:
    round: int
    api: str
    scenario: str
    ok: int
    bad: int
    rps: float
    p50_ms: float
    p99_ms: float
    end_p50_ms: float  # streams: time to the end of the stream (first byte + the rest)
    first_bad: str


def measure(target: Target, api: Api, scenario: Scenario, seconds: float, rnd: int) -> Sample:
    base = target.urls["chat"].removesuffix("/v1/chat/completions")
    routed = Target(target.name, {scenario.kind: base + api.path}, target.models, target.auth)
    if scenario.tool == "wrk":
        m = run_wrk(routed, scenario, seconds, api.body(target, scenario.kind, False), api.unary_expect)
        end = m.p50_ms
    else:
        m = run_streams(routed, scenario, seconds, StreamAsk(api.body(target, scenario.kind, True), api.stream_expect))
        end = m.p50_ms + m.spread_ms
    return Sample(rnd, api.name, scenario.name, m.ok, m.bad, m.rps, m.p50_ms, m.p99_ms, end, m.first_bad)


def overheads(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """api -> figure -> median over rounds of (that api's p50 - chat's p50 in the same round), ms."""
    by = {(s.round, s.api, s.scenario): s for s in samples}
    rounds = sorted({s.round for s in samples})
    found: dict[str, dict[str, float]] = {}
    for api in (a.name for a in APIS[1:]):
        figures = {"unary p50": (UNARY.name, "p50_ms"), "stream first byte p50": (STREAM.name, "p50_ms"),
                   "stream end p50": (STREAM.name, "end_p50_ms")}  # fmt: skip
        found[api] = {
            label: statistics.median(
                getattr(by[(r, api, scenario)], field) - getattr(by[(r, "chat", scenario)], field) for r in rounds
            )
            for label, (scenario, field) in figures.items()
        }
    return found


def _median(runs: list[Sample], field: str) -> float:
    return statistics.median(getattr(s, field) for s in runs)


def table(samples: list[Sample], found: dict[str, dict[str, float]], meta: dict) -> str:
    lines = [
        f"Translation benchmark, {meta['date']}: {meta['cores']} cores ({meta['machine']}), {meta['rounds']} "
        f"interleaved rounds x {meta['seconds_per_run']:g} s, load average {meta['load_average_1_5_15']}.",
        "",
        "| api | scenario | req/s | p50 ms | p99 ms | stream end p50 ms | bad/total |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for api in APIS:
        for scenario in (UNARY, STREAM):
            runs = [s for s in samples if s.api == api.name and s.scenario == scenario.name]
            rps, p50, p99, end = (_median(runs, f) for f in ("rps", "p50_ms", "p99_ms", "end_p50_ms"))
            shown_end = f"{end:.2f}" if scenario is STREAM else "-"
            lines.append(
                f"| {api.name} | {scenario.name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {shown_end} | "
                f"{sum(s.bad for s in runs)}/{sum(s.ok + s.bad for s in runs)} |"
            )
    lines += ["", f"Overhead over chat in the same round (median over rounds; goal <= {GOAL_MS} ms at p50):", ""]
    lines += ["| api | figure | ms |", "|---|---|---:|"]
    for api, figures in found.items():
        lines += [f"| {api} | {label} | {value:+.3f} |" for label, value in figures.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs) afterwards")
    args = parser.parse_args(argv)
    samples: list[Sample] = []
    with bench_stacks(args.keep) as (data_dir, fixtures, stacks):
        stub = start_stub(fixtures)
        stack, target = start_switchboard(data_dir / "switchboard", stub)
        stacks.append(stack)
        for api in APIS:  # warm-up, and a check that every API answers
            for scenario in (UNARY, STREAM):
                warm = measure(target, api, scenario, 2.0, 0)
                if warm.bad or not warm.ok:
                    raise SystemExit(f"{api.name} {scenario.name} fails the warm-up: {warm.first_bad}")
        for rnd in range(1, args.rounds + 1):
            for scenario in (UNARY, STREAM):
                for api in APIS:
                    sample = measure(target, api, scenario, args.duration, rnd)
                    samples.append(sample)
                    print(f"round {rnd} {scenario.name:9} {api.name:10} p50 {sample.p50_ms:.3f} ms "
                          f"end {sample.end_p50_ms:.3f} ms bad {sample.bad}", file=sys.stderr, flush=True)  # fmt: skip
    found = overheads(samples)
    meta = run_meta(args.rounds, args.duration)
    text = table(samples, found, meta)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "translate.md").write_text(text)
    document = {"meta": meta, "overhead_ms": found, "samples": [asdict(s) for s in samples]}
    (RESULTS_DIR / "translate.json").write_text(json.dumps(document, indent=2) + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
