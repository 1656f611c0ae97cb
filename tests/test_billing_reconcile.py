"""The reconciler against cost API stubs (the provider's side), in process on
a real SQLite ledger: strict validation of costs, failures that change
nothing, bounded concurrency, ageing into unpriced, idempotent settling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from helpers.billing import GARBAGE, VALID, CostApiStub, garbage_answer, ledger_database, record, stream_records, unique

from services.billing import ledger
from services.billing import reconciler as reconciler_module
from services.billing.reconciler import CostApi, Reconciler, ReconcilerSettings
from services.billing.servicer import ledger_row
from services.billing.storage import PENDING, SETTLED, UNPRICED, LedgerEntry
from services.common.db import Database

SECRET = "Bearer cost-api-secret-" + "x" * 8


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


async def store(db: Database, records: list) -> None:
    now = datetime.now(UTC)
    rows = [ledger_row(r, now) for r in records]
    await db.run(lambda s: ledger.record_entries(s, rows))


async def states(db: Database, records: list) -> dict[str, tuple[str, int | None]]:
    ids = [r.request_id for r in records]

    def read(session) -> dict[str, tuple[str, int | None]]:
        return {e.request_id: (e.state, e.cost_nano_usd) for e in (session.get(LedgerEntry, i) for i in ids)}

    return await db.run(read)


def reconciler(db: Database, provider: str, url: str, **overrides: float) -> Reconciler:
    settings = ReconcilerSettings(interval_seconds=0, **overrides)

    async def cost_apis() -> list[CostApi]:
        return [CostApi(provider, url, SECRET)]

    return Reconciler(db, cost_apis, settings)


async def test_garbage_costs_are_rejected_and_stay_pending(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    account, provider = unique("acct"), unique("prov")
    kinds = [*VALID, *GARBAGE, "missing-cost", "left-out"]
    records = {kind: record(account, provider, estimate=1_000 + i) for i, kind in enumerate(kinds)}
    names = {r.provider_request_id: kind for kind, r in records.items()}
    await store(db, list(records.values()))

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        return 200, garbage_answer(ids, names)

    caplog.set_level(logging.INFO)
    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url)
        await worker.start()
        try:
            counts = await worker.run_pass()
        finally:
            await worker.close()

    assert stub.authorizations == [SECRET]
    assert counts.asked == len(kinds)
    assert counts.settled == len(VALID)
    # garbage + missing cost, plus the entry without requestId and the non-object entry
    assert counts.rejected == len(GARBAGE) + 1 + 2
    after = await states(db, list(records.values()))
    for kind, entry in records.items():
        expected = (SETTLED, VALID[kind]) if kind in VALID else (PENDING, None)
        assert after[entry.request_id] == expected, kind

    start, end = ledger.month_bounds(datetime.now(UTC))
    report = await db.run(lambda s: ledger.usage_report(s, account, start, end))
    (line,) = report.by_provider
    assert line.settled_nano_usd == sum(VALID.values())
    assert line.pending_nano_usd == sum(r.estimated_nano_usd for k, r in records.items() if k not in VALID)
    assert line.requests == len(kinds)

    rejected = [r for r in caplog.records if r.getMessage().startswith("cost rejected")]
    rejected_ids = {r.provider_request_id for r in rejected}
    for kind in [*GARBAGE, "missing-cost"]:
        assert records[kind].provider_request_id in rejected_ids, kind
    assert all(r.provider == provider for r in rejected)
    assert any(getattr(r, "provider_request_id", "") == "never-asked" for r in caplog.records)
    assert SECRET not in caplog.text
    assert all(SECRET not in str(vars(r)) for r in caplog.records)


async def test_second_pass_settles_what_the_provider_prices_later(db: Database) -> None:
    account, provider = unique("acct"), unique("prov")
    records = [record(account, provider) for _ in range(4)]
    await store(db, records)
    priced: dict[str, int] = {records[0].provider_request_id: 10}

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        requests = [{"requestId": i, "costNanoUsd": priced[i]} for i in ids if i in priced]
        return 200, orjson.dumps({"requests": requests})

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url)
        await worker.start()
        try:
            first = await worker.run_pass()
            priced.update({r.provider_request_id: 20 for r in records})
            second = await worker.run_pass()
            third = await worker.run_pass()
        finally:
            await worker.close()
    assert (first.asked, first.settled, first.pending) == (4, 1, 3)
    assert (second.asked, second.settled, second.pending) == (3, 3, 0)
    assert (third.asked, third.settled) == (0, 0)
    after = await states(db, records)
    assert after[records[0].request_id] == (SETTLED, 10)
    assert {after[r.request_id] for r in records[1:]} == {(SETTLED, 20)}


async def test_a_stream_is_priced_once_its_final_record_came_not_while_it_runs(db: Database) -> None:
    """While a stream runs, only its provisional record is stored, and the provider's cost of it would
    be a part: it is not asked for. Its final record makes it pending as any other."""
    account = unique("acct")
    provisional, final = stream_records(account)
    await store(db, [provisional])
    asked: list[str] = []

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        asked.extend(ids)
        return 200, orjson.dumps({"requests": [{"requestId": i, "costNanoUsd": 9_000} for i in ids]})

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provisional.provider, stub.url)
        await worker.start()
        try:
            running = await worker.run_pass()
            await store(db, [final])
            ended = await worker.run_pass()
        finally:
            await worker.close()
    assert (running.asked, ended.asked, ended.settled) == (0, 1, 1)
    assert asked == [final.provider_request_id]
    assert (await states(db, [final]))[final.request_id] == (SETTLED, 9_000)
    assert await db.run(lambda s: ledger.month_spend(s, account, datetime.now(UTC))) == 9_000


@pytest.mark.parametrize(
    "failure", ["http-500", "http-401", "invalid-json", "not-an-object", "timeout", "closed", "oversized"]
)
async def test_failing_cost_api_changes_nothing_and_backs_off(db: Database, failure: str) -> None:
    account, provider = unique("acct"), unique("prov")
    records = [record(account, provider) for _ in range(3)]
    await store(db, records)
    passes_done = asyncio.Event()  # a "timeout" answer comes only after the passes (and the stub's close waits for it)
    asked = asyncio.Event()

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        asked.set()
        if failure == "timeout":
            await passes_done.wait()
        if failure == "closed":
            raise ConnectionResetError
        bodies = {"http-500": (500, b"{}"), "http-401": (401, b'{"requests": []}'), "invalid-json": (200, b"{nope"),
                  "oversized": (200, b'{"requests": [], "pad": "' + b"x" * 200_000 + b'"}')}  # fmt: skip
        return bodies.get(failure, (200, b'[{"requestId": "x", "costNanoUsd": 1}]'))

    async with CostApiStub(answer) as stub:
        # Only the "timeout" case waits for the timeout; the others must meet their own failure, not it,
        # whatever the machine's load.
        timeout = 0.5 if failure == "timeout" else 30
        worker = reconciler(db, provider, stub.url, timeout_seconds=timeout, backoff_max_seconds=60)
        await worker.start()
        try:
            counts = await worker.run_pass(respect_backoff=True)
            # A "timeout" pass ends at the client's timer, which a busy event loop may run before the
            # stub's handler (this loop's too) has taken the request: the call is counted once it has.
            await asyncio.wait_for(asked.wait(), 30)
            calls = len(stub.calls)
            skipped = await worker.run_pass(respect_backoff=True)  # within the back-off: not asked
            forced = await worker.run_pass(respect_backoff=False)  # on demand: asked again
        finally:
            passes_done.set()
            await worker.close()
    assert (counts.asked, counts.settled, counts.pending) == (0, 0, 3)
    assert calls == 1
    assert (skipped.asked, skipped.pending) == (0, 3)
    assert (forced.settled, forced.pending) == (0, 3)
    assert len(stub.calls) == 2
    assert set((await states(db, records)).values()) == {(PENDING, None)}


async def test_batches_are_bounded_and_run_concurrently(db: Database) -> None:
    account, provider = unique("acct"), unique("prov")
    records = [record(account, provider) for _ in range(95)]
    await store(db, records)
    in_flight, most = 0, 0

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return 200, orjson.dumps({"requests": [{"requestId": i, "costNanoUsd": 3} for i in ids]})

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url, batch_size=10, concurrency=3)
        await worker.start()
        try:
            counts = await worker.run_pass()
        finally:
            await worker.close()
    assert sorted(len(c) for c in stub.calls) == [5] + [10] * 9
    assert 1 <= most <= 3
    assert (counts.asked, counts.settled, counts.pending) == (95, 95, 0)


async def test_a_pass_past_its_time_for_a_provider_leaves_the_rest_to_the_next(db: Database, monkeypatch) -> None:
    """A large backlog at a slow cost API must not hold the pass (and every other provider's) for
    hours: past PROVIDER_PASS_SECONDS (here 0: one page) no new page is claimed; the next pass goes on."""
    monkeypatch.setattr(reconciler_module, "PROVIDER_PASS_SECONDS", 0.0)
    account, provider = unique("acct"), unique("prov")
    await store(db, [record(account, provider) for _ in range(25)])

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        return 200, orjson.dumps({"requests": [{"requestId": i, "costNanoUsd": 3} for i in ids]})

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url, batch_size=10, concurrency=3)
        await worker.start()
        try:
            passes = [await worker.run_pass() for _ in range(3)]
        finally:
            await worker.close()
    assert [(p.settled, p.pending) for p in passes] == [(10, 15), (10, 5), (5, 0)]


async def test_a_pass_past_its_time_is_followed_from_where_it_stopped(db: Database, monkeypatch) -> None:
    """Rows the cost API never prices stay at the head of the backlog: a pass that ran out of time
    is followed by one that goes on after it, so newer records are asked about too."""
    monkeypatch.setattr(reconciler_module, "PROVIDER_PASS_SECONDS", 0.0)
    account, provider = unique("acct"), unique("prov")
    records = [record(account, provider) for _ in range(30)]
    await store(db, records)
    ignored = {r.provider_request_id for r in sorted(records, key=lambda r: r.request_id)[:10]}  # the oldest

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        priced = [{"requestId": i, "costNanoUsd": 3} for i in ids if i not in ignored]
        return 200, orjson.dumps({"requests": priced})

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url, batch_size=10, concurrency=1)
        await worker.start()
        try:
            settled = [(await worker.run_pass()).settled for _ in range(4)]
        finally:
            await worker.close()
    assert settled == [0, 10, 10, 0]  # the oldest page (never priced), the two after it, then the end


async def test_requests_never_priced_age_into_unpriced_keeping_their_estimate(db: Database) -> None:
    account, provider = unique("acct"), unique("prov")
    records = [record(account, provider, estimate=700 + i) for i in range(3)]
    await store(db, records)

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        return 200, b'{"requests": []}'

    async with CostApiStub(answer) as stub:
        worker = reconciler(db, provider, stub.url, unpriced_after_seconds=0)
        await worker.start()
        try:
            counts = await worker.run_pass()
        finally:
            await worker.close()
    assert (counts.asked, counts.unpriced, counts.pending) == (3, 3, 0)
    assert worker.unpriced_total == 3
    start, end = ledger.month_bounds(datetime.now(UTC))
    report = await db.run(lambda s: ledger.usage_report(s, account, start, end))
    assert sorted(e for _, _, _, e in report.unpriced) == [700, 701, 702]
    assert all(reason and p == provider for _, p, reason, _ in report.unpriced)
    assert report.by_provider[0].pending_nano_usd == 700 + 701 + 702
    assert set((await states(db, records)).values()) == {(UNPRICED, None)}


async def test_settling_twice_charges_once(db: Database) -> None:
    account = unique("acct")
    records = [record(account) for _ in range(5)]
    await store(db, records)
    costs = [(r.request_id, 40) for r in records]
    assert await db.run(lambda s: ledger.settle_costs(s, costs)) == 5
    assert await db.run(lambda s: ledger.settle_costs(s, [(r, 99) for r, _ in costs])) == 0
    assert set((await states(db, records)).values()) == {(SETTLED, 40)}
