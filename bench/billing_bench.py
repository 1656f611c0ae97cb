"""Billing benchmark: ledger ingestion and cost reconciliation.

    .venv/bin/python bench/billing_bench.py [--requests 1000000] [--batch 10000] [--in-flight 2]

1. Ingestion: a real Billing process (SQLite, WAL) receives `--requests`
   ledger records over gRPC in RecordRequests batches; a batch is acked only
   after its transaction committed. Reports records/s stored.
2. Reconciliation: those records are all pending; Billing's Reconciler (the
   very code the service runs each pass) settles them against the reference
   provider's cost API (`POST /v1/billing/costs`, bearer auth; it prices
   ids it never served from the id). Reports the time to settle all, and
   checks that every record is settled exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not bench/

import grpc  # noqa: E402
from switchboard.billing.v1 import billing_service_pb2 as billing_pb  # noqa: E402

from services.billing import ledger  # noqa: E402
from services.billing.reconciler import CostApi, Reconciler, ReconcilerSettings  # noqa: E402
from services.common.db import Database  # noqa: E402
from services.launcher import Stack, free_port, http_ok  # noqa: E402

PROVIDER = "reference"
RECORD_METHOD = "/switchboard.billing.v1.LedgerService/RecordRequests"


def template_batch(size: int) -> billing_pb.RecordRequestsRequest:
    """One batch whose ids are rewritten before each send."""
    batch = billing_pb.RecordRequestsRequest()
    now = datetime.now(UTC)
    for _ in range(size):
        entry = batch.records.add(
            provider=PROVIDER,
            model="meta-llama/Llama-3.1-8B-Instruct",
            provider_model="llama-3.1-8b",
            task="conversational",
            caller="bench-user",
            account="bench-user",
            input_tokens=120,
            output_tokens=80,
            estimated_nano_usd=25_000,
        )
        entry.start_time.FromDatetime(now)
        entry.end_time.FromDatetime(now)
    return batch


async def ingest(address: str, total: int, batch_size: int, in_flight: int) -> float:
    """Sends `total` records; returns records/s acknowledged (stored and committed)."""
    run = secrets.token_hex(4)
    template = template_batch(batch_size)
    async with grpc.aio.insecure_channel(address) as channel:
        record = channel.unary_unary(
            RECORD_METHOD, request_serializer=None, response_deserializer=billing_pb.RecordRequestsResponse.FromString
        )
        slots = asyncio.Semaphore(in_flight)
        stored = 0

        async def send(payload: bytes) -> None:
            nonlocal stored
            try:
                answer = await record(payload, timeout=120)
                stored += answer.stored_count
            finally:
                slots.release()

        tasks = []
        started = time.perf_counter()
        for first in range(0, total, batch_size):
            count = min(batch_size, total - first)
            del template.records[count:]
            for offset, entry in enumerate(template.records):
                entry.request_id = f"{run}-{first + offset:09d}"
                entry.provider_request_id = f"ref-{run}-{first + offset:09d}"
            await slots.acquire()
            tasks.append(asyncio.create_task(send(template.SerializeToString())))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if stored != total:
        raise SystemExit(f"stored {stored} of {total} records")
    return total / elapsed


async def reconcile(
    database_url: str, cost_url: str, token: str, batch_size: int, concurrency: int
) -> tuple[float, dict]:
    """One pass of the Reconciler over everything pending; returns (seconds, counts)."""
    db = Database(database_url)
    settings = ReconcilerSettings(interval_seconds=0, batch_size=batch_size, concurrency=concurrency)

    async def cost_apis() -> list[CostApi]:
        return [CostApi(PROVIDER, cost_url, f"Bearer {token}")]

    worker = Reconciler(db, cost_apis, settings)
    await worker.start()
    try:
        started = time.perf_counter()
        counts = await worker.run_pass()
        elapsed = time.perf_counter() - started
        settled_once = await db.run(_settled_count)
    finally:
        await worker.close()
        db.close()
    return elapsed, {**vars(counts), "settled_in_ledger": settled_once}


def _settled_count(session) -> int:
    from sqlalchemy import func, select

    from services.billing.storage import SETTLED

    query = select(func.count()).select_from(ledger.LEDGER).where(ledger.LEDGER.c.state == SETTLED)
    return int(session.connection().execute(query).scalar_one())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000, help="records to ingest, then reconcile")
    parser.add_argument("--batch", type=int, default=10_000, help="records per RecordRequests call")
    parser.add_argument("--in-flight", type=int, default=2, help="RecordRequests calls in flight")
    parser.add_argument("--cost-batch", type=int, default=1_000, help="ids per cost API call")
    parser.add_argument("--cost-concurrency", type=int, default=4, help="cost API calls in flight")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        data_dir = Path(tmp)
        token = secrets.token_hex(16)
        env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "0"}
        stack = Stack(data_dir, env)
        billing_port, provider_port = free_port(), free_port()
        try:
            # Ingestion needs no Registry: nothing listens at this address.
            stack.start_service("billing", billing_port, "--registry-address", f"127.0.0.1:{free_port()}")
            provider_argv = [sys.executable, "-m", "services.reference_provider", "--port", str(provider_port)]
            stack.start(
                "reference_provider",
                [*provider_argv, "--billing-token", token],
                http_ok(f"http://127.0.0.1:{provider_port}/health"),
            )
            stack.wait_ready()
            rate = asyncio.run(ingest(stack.addresses["billing"], args.requests, args.batch, args.in_flight))
            print(
                f"ledger ingestion: {rate:,.0f} records/s durably stored ({args.requests:,} records, "
                f"batches of {args.batch:,}, {args.in_flight} in flight; goal >= 20,000/s)",
                flush=True,
            )
            billing = next(c for c in stack.children if c.name == "billing")
            billing.process.terminate()
            billing.process.wait(timeout=30)
            cost_url = f"http://127.0.0.1:{provider_port}/v1/billing/costs"
            seconds, counts = asyncio.run(
                reconcile(
                    f"sqlite:///{data_dir / 'billing.db'}", cost_url, token, args.cost_batch, args.cost_concurrency
                )
            )
        finally:
            stack.stop()
    print(
        f"reconciliation: {args.requests:,} pending requests settled in {seconds:.1f} s "
        f"({args.requests / seconds:,.0f}/s; batches of {args.cost_batch:,}, {args.cost_concurrency} in flight; "
        f"goal <= 60 s)",
        flush=True,
    )
    print(f"  counts: {counts}", flush=True)
    if counts["settled"] != args.requests or counts["settled_in_ledger"] != args.requests or counts["pending"]:
        print("ERROR: not every request was settled exactly once", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
