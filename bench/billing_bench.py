"""Billing benchmark: ledger ingestion and cost reconciliation, on the real stack.

    .venv/bin/python bench/billing_bench.py [--requests 1000000] [--batch 10000] [--in-flight 2]

Starts Switchboard (Envoy, Registry, Router, Billing on SQLite/WAL) and the
reference provider, registered as a provider with its cost API.

1. Ingestion: `--requests` ledger records go to Billing's LedgerService over
   gRPC in RecordRequests batches; a batch is acknowledged only after its
   transaction committed. Reports records/s stored.
2. Reconciliation: all those records are pending; `POST
   /admin/v1/billing:reconcile` (through Envoy, admin token) runs passes until
   none is pending (a pass claims one provider's pages for at most 60 s), each
   asking the reference provider's cost API (`POST /v1/billing/costs`, bearer
   auth; it prices ids it never served from the id) in batches and settling
   what it answers. Reports the time until the last call answered, then checks
   the usage report: every request settled exactly once, to the cent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, not bench/

from switchboard.billing.v1 import billing_service_pb2 as billing_pb  # noqa: E402

from services.common.service import channel as channel_to  # noqa: E402
from services.demo import reference_provider_argv, reference_provider_secrets  # noqa: E402
from services.launcher import Stack, UpOptions, free_port, http_ok, start_stack  # noqa: E402
from services.reference_provider.app import Knobs, State  # noqa: E402

PROVIDER = "bench-reference"
ACCOUNT = "bench-user"
RECORD_METHOD = "/switchboard.billing.v1.LedgerService/RecordRequests"
HTTP_TIMEOUT = 900.0


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
            caller=ACCOUNT,
            account=ACCOUNT,
            input_tokens=120,
            output_tokens=80,
            estimated_nano_usd=25_000,
        )
        entry.start_time.FromDatetime(now)
        entry.end_time.FromDatetime(now)
    return batch


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far: a figure the machine's other load does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def provider_request_id(run: str, index: int) -> str:
    return f"ref-{run}-{index:09d}"


async def ingest(address: str, credential: str, run: str, total: int, batch_size: int, in_flight: int) -> float:
    """Sends `total` records; returns records/s acknowledged (stored and committed)."""
    template = template_batch(batch_size)
    async with channel_to(address, credential) as channel:
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
                entry.provider_request_id = provider_request_id(run, first + offset)
            await slots.acquire()
            tasks.append(asyncio.create_task(send(template.SerializeToString())))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if stored != total:
        raise SystemExit(f"stored {stored} of {total} records")
    return total / elapsed


def call(base_url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    """A JSON REST call through Envoy with the admin token."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
        return json.loads(answer.read())


def register_reference_provider(stack: Stack, base_url: str, admin_token: str) -> None:
    """Starts the reference provider and registers it with its cost API."""
    port, billing_token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    stack.start("reference_provider", reference_provider_argv(port), http_ok(f"{url}/health"),
                env=reference_provider_secrets(billing_token=billing_token))  # fmt: skip
    stack.wait_ready()
    call(base_url, admin_token, "POST", "/admin/v1/orgs", {"name": PROVIDER + "-org"})
    provider = {
        "id": PROVIDER,
        "org": PROVIDER + "-org",
        "base_url": url,
        "tasks": ["conversational"],
        "billing_url": f"{url}/v1/billing/costs",
        "billing_authorization": f"Bearer {billing_token}",
    }
    call(base_url, admin_token, "POST", "/admin/v1/providers", provider)


def start(data_dir: Path, batch_size: int, concurrency: int) -> tuple[Stack, str, str]:
    """The stack with background reconciliation off (passes run on demand only)."""
    settings = {
        "SWITCHBOARD_ADMIN_TOKEN": "bench-admin-" + secrets.token_hex(16),
        "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "0",
        "SWITCHBOARD_RECONCILE_BATCH_SIZE": str(batch_size),
        "SWITCHBOARD_RECONCILE_CONCURRENCY": str(concurrency),
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    stack, admin_token, _ = start_stack(UpOptions(port, data_dir, "", demo=False, environment=settings))
    return stack, f"http://127.0.0.1:{port}", admin_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000, help="records to ingest, then reconcile")
    parser.add_argument("--batch", type=int, default=10_000, help="records per RecordRequests call")
    parser.add_argument("--in-flight", type=int, default=2, help="RecordRequests calls in flight")
    parser.add_argument("--cost-batch", type=int, default=1_000, help="ids per cost API call")
    parser.add_argument("--cost-concurrency", type=int, default=4, help="cost API calls in flight")
    args = parser.parse_args(argv)
    run = secrets.token_hex(4)

    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        stack, base_url, admin_token = start(Path(tmp), args.cost_batch, args.cost_concurrency)
        try:
            register_reference_provider(stack, base_url, admin_token)
            billing = next(c.process.pid for c in stack.children if c.name == "billing")
            cpu_before = cpu_seconds(billing)
            rate = asyncio.run(
                ingest(
                    stack.addresses["billing"],
                    stack.env["SWITCHBOARD_SERVICE_CREDENTIAL"],
                    run,
                    args.requests,
                    args.batch,
                    args.in_flight,
                )
            )
            ingest_cpu = cpu_seconds(billing) - cpu_before
            print(f"ledger ingestion: {rate:,.0f} records/s durably stored ({args.requests:,} records, "
                  f"batches of {args.batch:,}, {args.in_flight} in flight; goal >= 20,000/s); "
                  f"Billing used {ingest_cpu:.1f} CPU-s = {args.requests / ingest_cpu:,.0f} records per CPU-second",
                  flush=True)  # fmt: skip
            cpu_before = cpu_seconds(billing)
            started = time.perf_counter()
            counts = call(base_url, admin_token, "POST", "/admin/v1/billing:reconcile", {})
            while int(counts.get("pending", 0)):  # a pass leaves a provider's backlog after 60 s of it
                counts = call(base_url, admin_token, "POST", "/admin/v1/billing:reconcile", {})
            seconds = time.perf_counter() - started
            reconcile_cpu = cpu_seconds(billing) - cpu_before
            query = urllib.parse.urlencode({"account": ACCOUNT})
            usage = call(base_url, admin_token, "GET", f"/v1/billing/usage?{query}")
        finally:
            stack.stop()
    print(f"reconciliation: {args.requests:,} pending requests settled in {seconds:.1f} s "
          f"({args.requests / seconds:,.0f}/s; batches of {args.cost_batch:,}, {args.cost_concurrency} in flight; "
          f"goal <= 60 s); Billing used {reconcile_cpu:.1f} CPU-s", flush=True)  # fmt: skip
    print(f"  pass: {counts}", flush=True)
    print(f"  machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    oracle = State(Knobs())
    expected = sum(oracle.cost_of(provider_request_id(run, i)) for i in range(args.requests))
    exact = (usage["requests"], usage["settledNanoUsd"], usage["pendingNanoUsd"]) == (args.requests, expected, 0)
    print(f"  usage report: {usage['requests']:,} requests, settled {usage['settledNanoUsd']:,.0f} nano-USD "
          f"(expected {expected:,}), pending {usage['pendingNanoUsd']:,.0f}", flush=True)  # fmt: skip
    if not exact or counts.get("settled") != args.requests:
        print("ERROR: not every request was settled exactly once", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
