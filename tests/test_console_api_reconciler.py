"""The reconciler's record of each provider's cost API (what operators see in
/admin/v1/billing/providerReconciliations), in process against a cost API stub on a real
SQLite ledger: failures counted with Billing's own reason (never the provider's text),
the run of failures reset by an answer, attempts only when something was asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.billing import CostApiStub, ledger_database, record, unique

from services.billing import ledger
from services.billing.reconciler import CostApi, CostApiRecord, Reconciler, ReconcilerSettings
from services.billing.servicer import ledger_row
from services.common.db import Database
from services.launcher import free_port

SECRET = "Bearer cost-" + unique("secret")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with ledger_database(f"sqlite:///{tmp_path / 'billing.db'}") as database:
        yield database


async def test_failures_are_counted_with_our_reason_and_an_answer_ends_the_run(db: Database) -> None:
    provider, idle = unique("prov"), unique("idle")
    pending = record(unique("acct"), provider, estimate=1_000)
    await db.run(lambda s: ledger.record_entries(s, [ledger_row(pending, datetime.now(UTC))]))
    answers = iter([(500, SECRET.encode()), (200, b"not json " + SECRET.encode()), (200, b'{"requests": []}')])

    async def answer(ids: list[str]) -> tuple[int, bytes]:
        return next(answers)

    async with CostApiStub(answer) as stub:

        async def cost_apis() -> list[CostApi]:
            return [CostApi(provider, stub.url, SECRET), CostApi(idle, stub.url, SECRET)]

        worker = Reconciler(db, cost_apis, ReconcilerSettings(interval_seconds=0))
        await worker.start()
        try:
            assert worker.last_pass_time is None
            outcomes = []
            for _ in range(3):
                await worker.run_pass()
                kept = worker.cost_api_records[provider]
                outcomes.append((kept.failures, kept.consecutive_failures, kept.last_failure_reason))
        finally:
            await worker.close()

    assert outcomes == [
        (1, 1, "HTTP 500"),
        (2, 2, "the answer is not valid JSON"),
        (2, 0, "the answer is not valid JSON"),  # answered: the run ends, the last reason stays
    ]
    kept = worker.cost_api_records[provider]
    assert kept.has_cost_api and kept.last_failure_time <= kept.last_attempt_time <= worker.last_pass_time
    # a provider with nothing pending was never asked
    assert worker.cost_api_records[idle] == CostApiRecord(has_cost_api=True)
    assert len(stub.calls) == 3


async def test_a_provider_that_loses_its_cost_api_keeps_its_record(db: Database) -> None:
    provider = unique("prov")
    apis = [CostApi(provider, f"http://127.0.0.1:{free_port()}/costs", SECRET)]  # nothing listens there
    await db.run(lambda s: ledger.record_entries(s, [ledger_row(record(unique("a"), provider), datetime.now(UTC))]))

    async def cost_apis() -> list[CostApi]:
        return list(apis)

    worker = Reconciler(db, cost_apis, ReconcilerSettings(interval_seconds=0, timeout_seconds=5))
    await worker.start()
    try:
        await worker.run_pass()  # a connection error
        apis.clear()
        await worker.run_pass()
    finally:
        await worker.close()
    kept = worker.cost_api_records[provider]
    assert (kept.has_cost_api, kept.failures, kept.last_failure_reason) == (
        False,
        1,
        "connection error (ClientConnectorError)",
    )
