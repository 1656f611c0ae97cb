"""Helpers shared by the Billing tests: ledger records, a cost API stub
(the provider's side is outside the product), gRPC stubs, Billing's calls on a running
stack and the reference provider as a process of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from aiohttp import web
from sqlmodel import select
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from helpers.waiting import eventually
from services.billing import ledger
from services.billing.server import MIGRATIONS
from services.billing.servicer import ledger_row
from services.billing.storage import LedgerEntry
from services.common.db import Database, migrate
from services.common.pricing import saturated
from services.demo import reference_provider_argv, reference_provider_secrets
from services.launcher import free_port, http_ok


@contextmanager
def ledger_database(url: str) -> Iterator[Database]:
    """Billing's database at url, migrated to the newest schema; closed afterwards."""
    migrate(url, MIGRATIONS)
    database = Database(url)
    try:
        yield database
    finally:
        database.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def record(
    account: str,
    provider: str = "prov",
    *,
    provider_request_id: str | None = None,
    estimate: int = 1_000,
    model: str = "org/model",
    start: datetime | None = None,
) -> billing_pb.LedgerRecord:
    """A served request's ledger record; a provider request id is made up unless given ("" for none)."""
    started = start or datetime.now(UTC)
    entry = billing_pb.LedgerRecord(
        request_id=unique("req"),
        provider_request_id=unique("p") if provider_request_id is None else provider_request_id,
        provider=provider,
        model=model,
        provider_model=model + "-prov",
        task="conversational",
        caller=account,
        account=account,
        input_tokens=10,
        output_tokens=20,
        estimated_nano_usd=estimate,
    )
    entry.start_time.FromDatetime(started)
    entry.end_time.FromDatetime(started)
    return entry


class CostApiStub:
    """A provider's cost API on 127.0.0.1; `answer(ids)` decides each reply.

    `answer` returns (status, body bytes) or raises to drop the connection.
    Remembers every request (ids and the Authorization header).
    """

    def __init__(self, answer: Callable[[list[str]], Awaitable[tuple[int, bytes]]]) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []
        self.authorizations: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        ids = (await request.json())["requestIds"]
        self.calls.append(ids)
        self.authorizations.append(request.headers.get("Authorization", ""))
        status, body = await self.answer(ids)
        return web.Response(status=status, body=body, content_type="application/json")

    async def __aenter__(self) -> CostApiStub:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/billing/costs", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/billing/costs"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@contextmanager
def serving_in_thread(stub: CostApiStub) -> Iterator[CostApiStub]:
    """Runs the stub on its own event loop thread, for tests that make blocking calls."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="cost-api-stub", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(stub.__aenter__(), loop).result(10)
        try:
            yield stub
        finally:
            asyncio.run_coroutine_threadsafe(stub.__aexit__(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def register_provider(admin: httpx.Client, provider: str, billing_url: str, authorization: str) -> None:
    """Registers a provider (and its org) in the Registry with a cost API."""
    org = provider + "-org"
    answer = admin.post("/admin/v1/orgs", json={"name": org})
    assert answer.status_code in (200, 409), answer.text
    body = {
        "id": provider,
        "org": org,
        "baseUrl": "http://127.0.0.1:9",
        "tasks": ["conversational"],
        "billingUrl": billing_url,
        "billingAuthorization": authorization,
    }
    answer = admin.post("/admin/v1/providers", json=body)
    assert answer.status_code == 200, answer.text


# Raw JSON per provider request id: each kind of garbage a cost API may send.
GARBAGE = {
    "float": b"1.5",
    "exponent": b"1e3",
    "float-integral": b"1.0",
    "negative": b"-5",
    "string": b'"100"',
    "true": b"true",
    "false": b"false",
    "null": b"null",
    "too-big": str(2**63).encode(),
    "huge": b"99999999999999999999999",
    "object": b'{"usd": 1}',
}
VALID = {"ok": 1_500, "zero": 0, "ok-large": 123_456_789_012}


def garbage_answer(asked: list[str], names: dict[str, str]) -> bytes:
    """Valid costs, every kind of garbage, a missing cost, a missing id, an
    entry that is no object, an id never asked; one asked id left out."""
    entries = []
    for provider_request_id in asked:
        kind = names[provider_request_id]
        if kind in VALID:
            entries.append(b'{"requestId": "%s", "costNanoUsd": %d}' % (provider_request_id.encode(), VALID[kind]))
        elif kind in GARBAGE:
            entries.append(b'{"requestId": "%s", "costNanoUsd": %s}' % (provider_request_id.encode(), GARBAGE[kind]))
        elif kind == "missing-cost":
            entries.append(b'{"requestId": "%s"}' % provider_request_id.encode())
        # "left-out": not answered at all
    entries += [b'{"costNanoUsd": 7}', b'"just a string"', b'{"requestId": "never-asked", "costNanoUsd": 9}']
    return b'{"requests": [' + b", ".join(entries) + b"]}"


def stream_records(account: str) -> tuple[billing_pb.LedgerRecord, billing_pb.LedgerRecord]:
    """A stream's provisional record (made when it began) and its final one."""
    final = record(account, estimate=777)
    final.output_tokens = 42
    provisional = billing_pb.LedgerRecord()
    provisional.CopyFrom(final)
    provisional.provisional, provisional.output_tokens, provisional.estimated_nano_usd = True, 0, 5_000
    return provisional, final


async def check_provisional_records(db: Database, account: str) -> None:
    """A final record completes its provisional one, in a later batch or the same one, before or
    after it (a restarted Router's spool may send a provisional record again after the final);
    a resend changes nothing; a provisional record alone stands at its estimate."""
    now = datetime.now(UTC)
    first, first_final = stream_records(account)
    second, second_final = stream_records(account)
    third, third_final = stream_records(account)
    fourth, fourth_final = stream_records(account)
    orphan, _ = stream_records(account)  # the Router died mid-stream
    rows = [ledger_row(r, now) for r in (first, orphan, fourth)]
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == 3
    rows = [ledger_row(r, now) for r in (first_final, second, second_final)]
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == 2
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == 0
    rows = [ledger_row(r, now) for r in (third_final, third, fourth_final, fourth)]
    assert await db.run(lambda s: ledger.record_entries(s, rows)) == 2
    assert await db.run(lambda s: ledger.record_entries(s, [ledger_row(third, now)])) == 0  # alone, later
    query = select(LedgerEntry).where(LedgerEntry.account == account)
    stored = await db.run(lambda s: {r.request_id: (r.provisional, r.output_tokens, r.estimated_nano_usd)
                                     for r in s.exec(query)})  # fmt: skip
    assert stored == {
        first.request_id: (False, 42, 777),
        second.request_id: (False, 42, 777),
        third.request_id: (False, 42, 777),
        fourth.request_id: (False, 42, 777),
        orphan.request_id: (True, 0, 5_000),
    }


async def check_absurd_amounts(db: Database, account: str, amounts: list[tuple[int, int | None]]) -> None:
    """Records with any int64 estimate (each settled at a cost when one is given) and reservations
    of the same sizes: every sum of every query is the exact total saturated at int64, none
    raises (SQLite's SUM overflows), and the month total equals the ledger recounted."""
    now = datetime.now(UTC)
    rows = [ledger_row(record(account, estimate=estimate), now) for estimate, _ in amounts]
    await db.run(lambda s: ledger.record_entries(s, rows))
    costs = [(row["request_id"], cost) for row, (_, cost) in zip(rows, amounts, strict=True) if cost is not None]
    await db.run(lambda s: ledger.settle_costs(s, costs))
    for estimate, _ in amounts:
        await db.run(lambda s, e=estimate: ledger.reserve_spend(s, unique("req"), account, e, now.timestamp(), 900))
    charged = [
        row["estimated_nano_usd"] if cost is None else cost for row, (_, cost) in zip(rows, amounts, strict=True)
    ]
    recount = saturated(sum(charged))
    assert await db.run(lambda s: ledger.month_spend(s, account, now)) == recount
    assert await db.run(lambda s: ledger.reserved_spend(s, account, now.timestamp())) == saturated(
        sum(e for e, _ in amounts)
    )
    start, end = ledger.month_bounds(now)
    report = await db.run(lambda s: ledger.usage_report(s, account, start, end))
    (line,) = report.by_provider
    settled = saturated(sum(cost for _, cost in amounts if cost is not None))
    pending = saturated(sum(e for e, cost in amounts if cost is None))
    assert (line.settled_nano_usd, line.pending_nano_usd, line.requests) == (settled, pending, len(amounts))
    (day,) = await db.run(lambda s: ledger.daily_usage(s, account, start, end))
    assert day.amounts == (settled, pending, 0, len(amounts))


def store(stack, records: list) -> None:
    with stack.channel("billing") as channel:
        for first in range(0, len(records), 10_000):
            batch = billing_pb.RecordRequestsRequest(records=records[first : first + 10_000])
            billing_grpc.LedgerServiceStub(channel).RecordRequests(batch, timeout=30)


def reconcile(stack) -> dict:
    with stack.admin() as admin:
        answer = admin.post("/admin/v1/billing:reconcile", json={}, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def usage(stack, account: str) -> dict:
    with stack.admin() as admin:
        answer = admin.get("/v1/billing/usage", params={"account": account})
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_provider(report: dict) -> dict[str, dict]:
    return {line["provider"]: line for line in report["byProvider"]}


@contextmanager
def reference_provider(billing_token: str) -> Iterator[str]:
    """The reference provider as its own process; yields its cost API URL."""
    port = free_port()
    env = {**os.environ, **reference_provider_secrets(billing_token=billing_token)}
    argv = reference_provider_argv(port)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        ready = http_ok(f"http://127.0.0.1:{port}/health")
        eventually(lambda: process.poll() is not None or ready(), "the reference provider to start")
        assert process.poll() is None, "the reference provider did not start"
        yield f"http://127.0.0.1:{port}/v1/billing/costs"
    finally:
        process.terminate()
        process.wait(timeout=10)
