"""Registry benchmark: resolution at catalog scale, listing, cold start, memory.

    .venv/bin/python bench/registry_bench.py [--models 1000000] [--mappings 100000]
        [--tag-filters 10000] [--providers 20] [--calls 200000] [--grpc-calls 20000]

1. Generates a catalog of --models hub models (10% of them LoRAs of some
   base model), --mappings model mappings spread evenly over --providers
   providers (5,000 each by default), and --tag-filters tag-filter mappings
   (["lora", "base_model:adapter:<base>"]), a fifth of everything staging.
   They are written straight into a fresh Registry database.
2. In-process: loads the Registry's index from that database (the code the
   service runs at start) and times RegistryIndex.resolve() for a mix of
   mapped models, LoRAs matched by tag-filters, and unmapped models.
3. Starts the real stack on that data: cold start of the Registry (process
   start to SERVING, and its own index load time), its resident memory,
   ResolveModel over gRPC (sequential calls, one channel), and the REST
   listing of one provider's mappings through Envoy.
"""

from __future__ import annotations

import argparse
import gc
import random
import secrets
import sqlite3
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not bench/

import grpc  # noqa: E402
import orjson  # noqa: E402
from switchboard.registry.v1 import internal_service_pb2 as internal_pb  # noqa: E402
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc  # noqa: E402

from services.common.db import make_engine, migrate  # noqa: E402
from services.launcher import UpOptions, free_port, start_stack  # noqa: E402
from services.registry.server import MIGRATIONS  # noqa: E402
from services.registry.storage.queries import load_index  # noqa: E402

TASKS = ["text-generation", "text-to-image", "feature-extraction", "image-text-to-text", "automatic-speech-recognition"]
VOCABULARY = [f"tag-{i}" for i in range(2000)] + ["conversational", "transformers", "safetensors", "license:mit"]
LORA_SHARE = 10  # one model in ten is a LoRA
BASES = 20_000


class Data:
    """What was generated: ids the workload picks from."""

    def __init__(self) -> None:
        self.mapped: list[tuple[str, str]] = []  # (model, task)
        self.loras: list[str] = []
        self.unmapped: list[str] = []
        self.users: list[str] = []
        self.providers: list[str] = []


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    return ordered[len(ordered) // 2] / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def generate(db_path: Path, args: argparse.Namespace) -> Data:
    """Writes the catalog, providers, mappings and identity into a migrated Registry database."""
    rng = random.Random(7)
    data = Data()
    url = f"sqlite:///{db_path}"
    migrate(url, MIGRATIONS)
    make_engine(url).dispose()
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")  # how SQLAlchemy stores it in SQLite
    connection = sqlite3.connect(db_path)
    connection.execute("PRAGMA journal_mode=WAL")
    by_task: dict[str, list[str]] = {task: [] for task in TASKS}
    chat_models: set[str] = set()
    rows = []
    for i in range(args.models):
        model_id = f"org-{i % 50_000}/model-{i}"
        tags = rng.sample(VOCABULARY, rng.randint(3, 6))
        if i % LORA_SHARE == 0:
            tags += ["lora", f"base_model:adapter:base/{rng.randrange(BASES)}"]
            rows.append((model_id, "text-to-image", orjson.dumps(tags).decode(), "lora.safetensors"))
            data.loras.append(model_id)
            continue
        task = TASKS[i % len(TASKS)]
        by_task[task].append(model_id)
        if task == "text-generation" and "conversational" in tags:
            chat_models.add(model_id)
        rows.append((model_id, task, orjson.dumps(tags).decode(), ""))
    connection.executemany("INSERT INTO models VALUES (?, ?, ?, ?)", rows)
    del rows
    connection.execute("INSERT INTO orgs VALUES ('bench-org-0', ?)", (now,))
    data.providers = [f"provider-{p}" for p in range(args.providers)]
    for p, provider in enumerate(data.providers):
        connection.execute(f"INSERT OR IGNORE INTO orgs VALUES ('bench-org-{p}', ?)", (now,))
        connection.execute(
            "INSERT INTO providers VALUES (?, ?, 'http://127.0.0.1:9', 'k', '[]', 'Inference-Id', '', '', ?, ?)",
            (provider, f"bench-org-{p}", p % 3, now),
        )
    for u in range(100):
        user = f"user-{u}"
        data.users.append(user)
        connection.execute("INSERT INTO users VALUES (?, '[]', ?)", (user, now))
        connection.execute("INSERT INTO memberships VALUES (?, ?, 'write')", (f"bench-org-{u % args.providers}", user))
    mappings = []
    seq = 0
    per_provider = args.mappings // args.providers
    mapped_pool = [(m, t) for t, models in by_task.items() for m in models]
    chosen = rng.sample(mapped_pool, min(len(mapped_pool), per_provider * 4))
    for p, provider in enumerate(data.providers):
        # a fifth of the providers share each slice: every mapped model has five providers
        for model_id, task in chosen[(p % 4) * per_provider : (p % 4 + 1) * per_provider]:
            seq += 1
            status = "staging" if seq % 5 == 0 else "live"
            mapping_task = "conversational" if model_id in chat_models else task
            mappings.append(
                (
                    secrets.token_hex(12),
                    seq,
                    provider,
                    "model",
                    mapping_task,
                    model_id,
                    "",
                    f"pm-{seq}",
                    status,
                    "",
                    now,
                )
            )
    data.mapped = [(m, "conversational" if m in chat_models else t) for m, t in chosen]
    for f in range(args.tag_filters):
        seq += 1
        tags_key = ",".join(sorted(["lora", f"base_model:adapter:base/{f % BASES}"]))
        provider = data.providers[f % args.providers]
        status = "staging" if seq % 5 == 0 else "live"
        mappings.append(
            (
                secrets.token_hex(12),
                seq,
                provider,
                "tag-filter",
                "text-to-image",
                "",
                tags_key,
                f"lora-{f}",
                status,
                "lora",
                now,
            )
        )
    connection.executemany("INSERT INTO mappings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", mappings)
    connection.commit()
    connection.close()
    data.unmapped = rng.sample(by_task["feature-extraction"], min(10_000, len(by_task["feature-extraction"])))
    return data


def workload(data: Data, count: int) -> list[tuple[str, str, str]]:
    """(model, user, task): half mapped models, 30% LoRAs, 20% unmapped models."""
    rng = random.Random(11)
    calls = []
    for i in range(count):
        user = rng.choice(data.users) if i % 2 else ""
        kind = i % 10
        if kind < 5:
            model, task = rng.choice(data.mapped)
        elif kind < 8:
            model, task = rng.choice(data.loras), "text-to-image"
        else:
            model, task = rng.choice(data.unmapped), "conversational"
        calls.append((model, user, task))
    return calls


def bench_in_process(db_path: Path, calls: list[tuple[str, str, str]]) -> dict:
    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{db_path}")
    index = load_index(engine)
    engine.dispose()
    load_seconds = time.perf_counter() - started
    gc.freeze()  # as the Registry does after loading its index
    resolve = index.resolve
    for model, user, task in calls[:10_000]:  # warm-up
        resolve(model, user, task)
    samples, found = [], 0
    clock = time.perf_counter_ns
    for model, user, task in calls:
        t0 = clock()
        resolution = resolve(model, user, task)
        samples.append(clock() - t0)
        found += bool(resolution.candidates)
    p50, p99 = percentiles(samples)
    return {"load_seconds": load_seconds, "p50_us": p50, "p99_us": p99, "with_candidates": found / len(calls)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def index_load_seconds(log_path: Path) -> float:
    for line in log_path.read_text().splitlines():
        if '"index loaded"' in line:
            return orjson.loads(line)["seconds"]
    return float("nan")


def bench_grpc(address: str, calls: list[tuple[str, str, str]]) -> dict:
    samples = []
    with grpc.insecure_channel(address) as channel:
        stub = internal_grpc.InternalServiceStub(channel)
        requests = [internal_pb.ResolveModelRequest(model=m, user=u, task=t) for m, u, t in calls]
        for request in requests[:1000]:
            stub.ResolveModel(request, timeout=10)
        for request in requests:
            t0 = time.perf_counter_ns()
            stub.ResolveModel(request, timeout=10)
            samples.append(time.perf_counter_ns() - t0)
    p50, p99 = percentiles(samples)
    return {"p50_us": p50, "p99_us": p99}


def bench_listing(base_url: str, provider: str, rounds: int = 20) -> dict:
    url = f"{base_url}/api/partners/{provider}/models"
    samples, size, entries = [], 0, 0
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        with urllib.request.urlopen(url, timeout=60) as answer:
            body = answer.read()
        samples.append(time.perf_counter_ns() - t0)
        size = len(body)
    entries = sum(len(v) for v in orjson.loads(body).values())
    ordered = sorted(samples)
    return {"p50_ms": ordered[len(ordered) // 2] / 1e6, "max_ms": ordered[-1] / 1e6, "bytes": size, "entries": entries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1_000_000, help="catalog models")
    parser.add_argument("--mappings", type=int, default=100_000, help="model mappings")
    parser.add_argument("--tag-filters", type=int, default=10_000, help="tag-filter mappings")
    parser.add_argument("--providers", type=int, default=20, help="providers sharing the mappings")
    parser.add_argument("--calls", type=int, default=200_000, help="in-process resolutions timed")
    parser.add_argument("--grpc-calls", type=int, default=20_000, help="gRPC resolutions timed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        data = generate(data_dir / "registry.db", args)
        print(
            f"generated {args.models:,} models, {args.mappings:,} model mappings over {args.providers} providers, "
            f"{args.tag_filters:,} tag-filters in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        calls = workload(data, args.calls)
        local = bench_in_process(data_dir / "registry.db", calls)
        print(
            f"in-process resolution: p50 {local['p50_us']:.1f} us, p99 {local['p99_us']:.1f} us "
            f"({args.calls:,} calls, {local['with_candidates']:.0%} with candidates; goal p99 <= 20 us); "
            f"index load {local['load_seconds']:.1f} s",
            flush=True,
        )
        del calls
        port = free_port()
        started = time.perf_counter()
        try:
            token = {"SWITCHBOARD_ADMIN_TOKEN": secrets.token_hex(16)}
            stack, _, _ = start_stack(UpOptions(port, data_dir, "", demo=False, environment=token))
        except RuntimeError:
            print((data_dir / "logs" / "registry.log").read_text()[-5000:], file=sys.stderr)
            raise
        try:
            ready = time.perf_counter() - started
            registry = next(c for c in stack.children if c.name == "registry")
            print(
                f"cold start: stack ready in {ready:.1f} s; the Registry loaded its index in "
                f"{index_load_seconds(registry.log_path):.1f} s; Registry RSS {rss_mib(registry.process.pid):,.0f} MiB",
                flush=True,
            )
            remote = bench_grpc(stack.addresses["registry"], workload(data, args.grpc_calls))
            print(
                f"gRPC ResolveModel (sequential, one channel): p50 {remote['p50_us']:.0f} us, "
                f"p99 {remote['p99_us']:.0f} us ({args.grpc_calls:,} calls)",
                flush=True,
            )
            listing = bench_listing(f"http://127.0.0.1:{port}", data.providers[0])
            print(
                f"REST listing of one provider ({listing['entries']:,} mappings, {listing['bytes']:,} bytes) "
                f"through Envoy: p50 {listing['p50_ms']:.0f} ms, max {listing['max_ms']:.0f} ms",
                flush=True,
            )
            print(f"Registry RSS after the run: {rss_mib(registry.process.pid):,.0f} MiB", flush=True)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
