"""The Router's own work per answer, without gRPC or Envoy: its servicer in a process of its own, its
Registry answers cached (as under steady load, the change feed followed), its ledger records journaled,
answering chat and streams from the Envoy stub upstream; CPU microseconds of that process per answer.
With --baseline, an earlier checkout's servicer runs the same way in turns with this one.

    .venv/bin/python bench/run.py servicer [--rounds 5] [--answers 4000] [--baseline <checkout with a .venv>]

The whole stack's CPU per answer (`bench/run.py router`) moves by ±5 % between runs on a shared
machine; this leaves out Envoy, gRPC and the other services, so a change of the Router's Python of a
few microseconds shows. Chat runs 32 answers at a time, streams one at a time (the stub's whole
stream: six events). Output: bench/results/servicer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "--child" in sys.argv:  # the measured process: the checkout's own code
    sys.path[0] = os.getcwd()
else:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not bench/

TOKEN = "sb-bench-" + "x" * 32
CONCURRENT_CHATS = 32
WARM_UP_ANSWERS = 1000
# Request metadata as Envoy sends it for a REST chat (the Router reads some, gRPC converts all).
METADATA = (
    ("content-type", "application/grpc"),
    ("user-agent", "envoy"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "4b1c7a52-5a86-4b29-9d2e-2f0c6c6f8f0e"),
    ("authorization", f"Bearer {TOKEN}"),
    ("switchboard-answer-metadata", "trailers"),
    ("x-forwarded-for", "127.0.0.1"),
    ("te", "trailers"),
)


class Context:
    """What the servicer reads of grpc.aio's ServicerContext."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return METADATA

    def time_remaining(self) -> float:
        return 600.0

    def set_trailing_metadata(self, metadata: list) -> None:
        self.trailing = metadata

    async def send_initial_metadata(self, metadata: list) -> None:
        self.initial = metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"


def servicer(unary_url: str, stream_url: str, spool_dir: Path):
    """A RouterServicer as services/router/server.py builds it, its Registry's answers cached."""
    from switchboard.registry.v1 import internal_service_pb2 as internal_pb

    from services.router.breaker import Breakers
    from services.router.directory import Directory, Resolved
    from services.router.measurements import Measurements
    from services.router.servicer import RouterServicer
    from services.router.spending import Spending
    from services.router.spool import Spool
    from services.router.upstream import Upstreams

    directory = Directory(None)
    directory.watching = True
    directory._callers[hashlib.sha256(TOKEN.encode()).digest()] = internal_pb.Caller(user="bench")
    for model, url in (("bench/chat", unary_url), ("bench/stream", stream_url)):
        provider = model.replace("/", "-")
        answer = internal_pb.ResolveModelResponse(model_found=True, model=model)
        answer.candidates.add(provider=provider, provider_model="stub-model")
        config = answer.provider_configs.add()
        config.provider.id, config.provider.base_url = provider, url
        config.provider.api_key, config.provider.request_id_header = "stub-key-0123456789abcdef", "Inference-Id"
        config.provider.tasks.append("conversational")
        directory._resolutions[("model", model, (), "bench", "conversational")] = Resolved.of(answer)
    spending = Spending(None, 0.5, Breakers(5, 30))
    spending.limited = set()  # Billing's feed followed: no account here has a limit
    spool = Spool(None, spool_dir, 500)
    spool.load_spool()
    measurements = Measurements()
    upstreams = Upstreams(Breakers(5, 30), 3.0, 60.0, 120.0, 8 * 1024 * 1024, measurements)
    return RouterServicer(directory, upstreams, spending, spool, measurements, "https://hub.test")


async def answers(router, model: str, count: int, concurrency: int) -> float:
    """CPU microseconds of this process per answer, `concurrency` answers at a time."""
    from google.api import httpbody_pb2
    from switchboard.router.v1 import router_service_pb2 as router_pb

    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    data = json.dumps({**body, "stream": model.endswith("stream")}).encode()
    request = router_pb.CreateChatCompletionRequest(
        body=httpbody_pb2.HttpBody(content_type="application/json", data=data)
    )

    async def caller(calls: int) -> None:
        for _ in range(calls):
            async for _ in router.CreateChatCompletion(request, Context()):
                pass

    started = time.process_time()
    await asyncio.gather(*(caller(count // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (count // concurrency * concurrency) * 1e6


async def child(unary_url: str, stream_url: str, count: int) -> dict[str, float]:
    router = servicer(unary_url, stream_url, Path(tempfile.mkdtemp(prefix="switchboard-servicer-bench-")))
    await answers(router, "bench/chat", WARM_UP_ANSWERS, CONCURRENT_CHATS)
    await answers(router, "bench/stream", WARM_UP_ANSWERS // 4, 1)
    chat = await answers(router, "bench/chat", count, CONCURRENT_CHATS)
    return {"chat": chat, "stream": await answers(router, "bench/stream", count // 2, 1)}


def measure(checkout: Path, unary_url: str, stream_url: str, count: int) -> dict[str, float]:
    """One run of a checkout's servicer, in a process of its own."""
    argv = [str(checkout / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--child",
            unary_url, stream_url, str(count)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.splitlines()[-1])


def table(runs: dict[str, list[dict[str, float]]], answers_per_run: int) -> str:
    from bench.report import run_meta

    meta = run_meta(len(next(iter(runs.values()))), 0)
    lines = [
        f"Servicer benchmark, {meta['date']}: {meta['cores']} cores ({meta['machine']}), {meta['rounds']} rounds "
        f"in turns, {answers_per_run} chats and {answers_per_run // 2} streams per run; load average "
        f"{'/'.join(map(str, meta['load_average_1_5_15']))} at the end.",
        "CPU microseconds of the servicer's process per answer (no gRPC, Envoy, Registry or Billing): "
        "median (min) over rounds.",
        "",
        "| code | chat, 32 at a time | stream, one at a time |",
        "|---|---:|---:|",
    ]
    for name, results in runs.items():
        cells = [f"{statistics.median(r[k] for r in results):.1f} ({min(r[k] for r in results):.1f})"
                 for k in ("chat", "stream")]  # fmt: skip
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py servicer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--answers", type=int, default=4000, help="chats per run (half as many streams)")
    parser.add_argument("--baseline", type=Path, help="an earlier checkout with its own .venv, run in turns")
    args = parser.parse_args(argv)

    from bench.report import RESULTS_DIR
    from bench.targets import start_stub
    from services.launcher import Stack

    root = Path(__file__).resolve().parent.parent
    checkouts = {"this checkout": root, **({f"baseline {args.baseline}": args.baseline} if args.baseline else {})}
    fixtures = Stack(Path(tempfile.mkdtemp(prefix="switchboard-servicer-bench-")), {})
    try:
        stub = start_stub(fixtures)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
        for round_number in range(args.rounds):
            for name, checkout in checkouts.items():
                urls = (stub.url("unary").removesuffix("/v1"), stub.url("stream").removesuffix("/v1"))
                runs[name].append(measure(checkout, *urls, args.answers))
                print(f"round {round_number + 1} {name}: {runs[name][-1]}", flush=True)
    finally:
        fixtures.stop()
    text = table(runs, args.answers)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "servicer.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        import uvloop

        unary, stream, count = sys.argv[sys.argv.index("--child") + 1 :]
        print(json.dumps(uvloop.run(child(unary, stream, int(count)))), flush=True)
    else:
        sys.exit(main())
