"""Cold requests: how long a chat request takes when the Router has no cached answer for its
model, against the same stub as the router benchmark (docs/resolution.md).

Per round, three sequential requests of one caller: a model never asked before, just after a
change of another provider (which drops a Router's provider table: what a Router that reads one
must ask again), a second new model without that change, and that second model again (cached).
Runs the stack of this checkout; for the "before" of a pair, run it from an earlier checkout.

    .venv/bin/python bench/run.py cold [--rounds 100]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.stub import StubPorts  # noqa: E402
from bench.targets import AdminClient, register_switchboard, start_stub  # noqa: E402
from services.launcher import Stack, UpOptions, free_port, start_stack  # noqa: E402

CASES = ("cold, provider table dropped", "cold", "cached")
NOTICE_SECONDS = 0.05  # for the provider change's notice to reach the Router before the request


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def models_for(admin: AdminClient, provider: str, token: str, count: int) -> list[str]:
    """`count` new hub models, each mapped (live) to the provider."""
    names = [f"cold/m-{secrets.token_hex(4)}" for _ in range(count)]
    entries = [{"id": name, "pipelineTag": "text-generation", "tags": ["conversational"]} for name in names]
    admin.call("POST", "/admin/v1/models:batchUpsert", {"models": entries})
    for name in names:
        mapping = {"task": "conversational", "hfModel": name, "providerModel": "stub-model", "status": "live"}
        admin.call("POST", f"/api/partners/{provider}/models", mapping, token=token)
    return names


def measure(base: str, admin: AdminClient, stub: StubPorts, rounds: int) -> dict[str, list[float]]:
    token, _, providers, _ = register_switchboard(admin, stub, limited=False)
    models = iter(models_for(admin, providers["chat"], token, 2 * rounds))
    timings: dict[str, list[float]] = {case: [] for case in CASES}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:

        def timed(case: str, model: str) -> None:
            started = time.perf_counter()
            answer = http.post("/v1/chat/completions", json={"model": model, **body})
            timings[case].append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()

        for _ in range(rounds):
            admin.call("PUT", f"/admin/v1/providers/{providers['image']}/prices", {"prices": []})
            time.sleep(NOTICE_SECONDS)
            timed(CASES[0], next(models))
            model = next(models)
            timed(CASES[1], model)
            timed(CASES[2], model)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py cold", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="switchboard-cold-"))
    fixtures = Stack(data_dir / "fixtures", {**os.environ})
    stack = None
    try:
        stub = start_stub(fixtures)
        port = free_port()
        options = UpOptions(
            port, data_dir / "stack", "", demo=False, environment={"SWITCHBOARD_PROBES_ENABLED": "false"}
        )
        stack, admin_token, _ = start_stack(options)
        base = f"http://127.0.0.1:{port}"
        timings = measure(base, AdminClient(base, admin_token), stub, args.rounds)
    finally:
        for running in (stack, fixtures):
            if running is not None:
                running.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{'case':<32} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}   ({args.rounds} rounds)")
    for case, values in timings.items():
        p50, p90, mean = percentile(values, 0.5), percentile(values, 0.9), statistics.fmean(values)
        print(f"{case:<32} {p50:>8.2f} {p90:>8.2f} {mean:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
