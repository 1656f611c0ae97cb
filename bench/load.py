"""Load generators: wrk (with bench.lua) for unary requests, and a small aiohttp
client for streams (time to first byte, and whether paced chunks pass through
as they arrive). Every answer is checked; bad answers are counted, never timed."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.stub import PACED_SPAN_SECONDS
from bench.targets import Target

LUA_SCRIPT = Path(__file__).resolve().parent / "bench.lua"
CHAT_EXPECT = '"chat.completion"|"choices"|"content"|"Hello from the stub."'
IMAGE_EXPECT = '"data"|"http://127.0.0.1/bench/image.png"'
EMBED_EXPECT = '"embedding"|"data"|"usage"'
EXPECT = {"image": IMAGE_EXPECT, "embed": EMBED_EXPECT}
STREAM_EXPECT = ("chat.completion.chunk", "data: [DONE]")
REQUEST_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    """One measured situation: which kind of request, how many connections, which tool."""

    name: str
    kind: str  # "chat", "image", "stream" or "paced" (see targets.KINDS)
    connections: int
    tool: str  # "wrk" or "stream"


SCENARIOS = [
    Scenario("chat-1c", "chat", 1, "wrk"),
    Scenario("chat-32c", "chat", 32, "wrk"),
    Scenario("image-32c", "image", 32, "wrk"),
    Scenario("embed-32c", "embed", 32, "wrk"),
    Scenario("stream-ttfb", "stream", 1, "stream"),
    Scenario("stream-paced", "paced", 1, "stream"),
]


@dataclass
class Measurement:
    """One run of one scenario against one target. Latencies in milliseconds."""

    requests: int
    ok: int
    bad: int
    rps: float
    p50_ms: float
    p99_ms: float
    first_bad: str = ""
    spread_ms: float = 0.0  # paced streams: time from the first chunk to [DONE]
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)  # per process of the target

    def to_json(self) -> dict:
        return asdict(self)


def request_body(target: Target, kind: str, stream: bool = False) -> str:
    """The JSON body of one request of `kind` to `target`."""
    model = target.models[kind]
    if kind == "image":
        return json.dumps({"model": model, "prompt": "a lighthouse at dusk", "response_format": "url", "n": 1})
    if kind == "embed":
        return json.dumps({"model": model, "input": ["a lighthouse at dusk", "Say hello."], "encoding_format": "float"})
    body: dict = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def run_wrk(target: Target, scenario: Scenario, seconds: float) -> Measurement:
    """wrk with one thread (the other core is left to the target)."""
    env = {
        **os.environ,
        "BENCH_BODY": request_body(target, scenario.kind),
        "BENCH_AUTH": target.auth,
        "BENCH_EXPECT": EXPECT.get(scenario.kind, CHAT_EXPECT),
    }
    argv = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    argv += ["-s", str(LUA_SCRIPT), target.urls[scenario.kind]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (status {done.returncode}): {done.stderr[-500:]}")
    r = json.loads(line.removeprefix("BENCH_JSON "))
    bad = r["non2xx"] + r["invalid"] + r["socket_errors"]
    return Measurement(
        requests=r["requests"],
        ok=r["ok"],
        bad=bad,
        rps=r["ok"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        first_bad=r["first_bad"],
    )


async def _one_stream(session: aiohttp.ClientSession, target: Target, kind: str) -> tuple[float, float, str]:
    """(time to first body byte, time from first byte to the end, problem or "")."""
    started = time.perf_counter()
    async with session.post(
        target.urls[kind], data=request_body(target, kind, stream=True), headers=target.headers()
    ) as answer:
        first = await answer.content.readany()
        first_at = time.perf_counter()
        rest = await answer.content.read()
        ended = time.perf_counter()
        text = (first + rest).decode(errors="replace")
        problem = ""
        if answer.status != 200:
            problem = f"{answer.status} {text[:300]}"
        elif not all(piece in text for piece in STREAM_EXPECT):
            problem = f"invalid stream: {text[:300]}"
    return first_at - started, ended - first_at, problem


async def _streams(target: Target, kind: str, count: int) -> Measurement:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=1)
    ttfbs: list[float] = []
    spreads: list[float] = []
    bad, first_bad = 0, ""
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        for _ in range(count):
            ttfb, spread, problem = await _one_stream(session, target, kind)
            if problem:
                bad += 1
                first_bad = first_bad or problem
                continue
            ttfbs.append(ttfb * 1000)
            spreads.append(spread * 1000)
        elapsed = time.perf_counter() - started
    if not ttfbs:
        return Measurement(count, 0, bad, 0.0, 0.0, 0.0, first_bad)
    return Measurement(
        requests=count,
        ok=len(ttfbs),
        bad=bad,
        rps=len(ttfbs) / elapsed,
        p50_ms=statistics.median(ttfbs),
        p99_ms=percentile(ttfbs, 99),
        first_bad=first_bad,
        spread_ms=statistics.median(spreads),
    )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_streams(target: Target, scenario: Scenario, seconds: float) -> Measurement:
    """Sequential streamed requests for about `seconds` (paced streams: fewer, each takes ~100 ms)."""
    per_request = PACED_SPAN_SECONDS if scenario.kind == "paced" else 0.005
    count = max(20, min(500, int(seconds / per_request / 2)))
    return asyncio.run(_streams(target, scenario.kind, count))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure(target: Target, scenario: Scenario, seconds: float) -> Measurement:
    """One run of `scenario` against `target`, with the CPU time each of its processes spent per answer."""
    before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    run = run_wrk if scenario.tool == "wrk" else run_streams
    m = run(target, scenario, seconds)
    if m.ok:
        m.cpu_ms_per_request = {
            name: 1000 * (cpu_seconds(pid) - before[name]) / m.requests for name, pid in target.pids.items()
        }
    return m
