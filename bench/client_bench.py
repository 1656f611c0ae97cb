"""The Router's outbound HTTP client, measured by itself: aiohttp's pooled session against the
lean client (services/common/http1.py), both POSTing a chat body to the Envoy stub, interleaved
in one run. What each client costs per call, without gRPC, Envoy's transcoder or the Router.

    .venv/bin/python bench/run.py client [--rounds 3] [--duration 5]

Writes bench/results/client.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

from bench.targets import start_stub  # noqa: E402
from services.common.http1 import Pool  # noqa: E402
from services.common.provider_api import read_capped  # noqa: E402
from services.launcher import Stack  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "client.md"
BODY = orjson.dumps({"model": "stub-model", "messages": [{"role": "user", "content": "hello"}]})
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer stub-key"}
MOST = 8 * 1024 * 1024

Call = Callable[[], Awaitable[bytes]]


def aiohttp_call(session: aiohttp.ClientSession, url: str) -> Call:
    async def call() -> bytes:
        response = await session.post(url, data=BODY, headers=HEADERS)
        try:
            return await read_capped(response, MOST)
        finally:
            response.release()

    return call


def lean_call(pool: Pool, url: str) -> Call:
    async def call() -> bytes:
        response = await pool.post(url, data=BODY, headers=HEADERS)
        try:
            return await read_capped(response, MOST)
        finally:
            response.release()

    return call


async def load(call: Call, connections: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, CPU ms per request) of `connections` callers in a loop."""
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            began = time.perf_counter()
            assert b"chat.completion" in await call()
            latencies.append(time.perf_counter() - began)

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(caller() for _ in range(connections)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return len(latencies) / wall, statistics.median(latencies) * 1000, cpu * 1000 / len(latencies)


async def measure(url: str, rounds: int, seconds: float) -> dict[tuple[str, int], list[tuple[float, float, float]]]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=120)
    session, pool = aiohttp.ClientSession(connector=connector, timeout=timeout), Pool(3, 120)
    clients = {"aiohttp": aiohttp_call(session, url), "lean": lean_call(pool, url)}
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for call in clients.values():  # warm-up: connections open, code paths hot
            await load(call, 32, 1.0)
        for _ in range(rounds):
            for connections in (1, 32):
                for name, call in clients.items():
                    results.setdefault((name, connections), []).append(await load(call, connections, seconds))
    finally:
        await session.close()
        await pool.close()
    return results


def table(results: dict[tuple[str, int], list[tuple[float, float, float]]], rounds: int, seconds: float) -> str:
    lines = [
        f"Client benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {rounds} interleaved rounds x "
        f"{seconds:g} s, medians over rounds; one process, uvloop, the Envoy stub (bench/stub.py).",
        "",
        "| client | connections | req/s | p50 ms | CPU ms per request |",
        "|---|---:|---:|---:|---:|",
    ]
    for (name, connections), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        rate, p50, cpu = (statistics.median(column) for column in zip(*runs, strict=True))
        lines.append(f"| {name} | {connections} | {rate:,.0f} | {p50:.3f} | {cpu:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    args = parser.parse_args(argv)
    fixtures = Stack(Path(tempfile.mkdtemp(prefix="switchboard-client-bench-")), {})
    try:
        stub = start_stub(fixtures)
        results = uvloop.run(measure(stub.url("unary") + "/chat/completions", args.rounds, args.duration))
    finally:
        fixtures.stop()
    text = table(results, args.rounds, args.duration)
    RESULTS.write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
