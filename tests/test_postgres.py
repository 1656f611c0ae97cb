"""The stack on PostgreSQL: Registry and Billing share one database (each
with its own Alembic version table), and the partners API, the ledger and
reconciliation behave as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.billing import by_provider, reconcile, record, reference_provider, register_provider, store, unique, usage
from helpers.postgres import postgres_cluster
from helpers.registry import build_world, ok


@pytest.fixture(scope="module")
def pg_stack(make_stack) -> Iterator:
    with postgres_cluster() as url:
        sb = make_stack(SWITCHBOARD_DATABASE_URL=url)
        yield sb
        sb.stack.stop()


def test_partners_api_on_postgres(pg_stack) -> None:
    with pg_stack.admin() as admin:
        world = build_world(admin)
    chat = world.models["chat"]
    body = {"task": "conversational", "hfModel": chat, "providerModel": "chat-v1", "status": "live"}
    with pg_stack.http(world.tokens["writer"]) as partner:
        mapping_id = ok(partner.post(f"/api/partners/{world.provider}/models", json=body))["_id"]
        assert partner.post(f"/api/partners/{world.provider}/models", json=body).status_code == 409
    with pg_stack.http() as public:
        table = ok(public.get(f"/api/partners/{world.provider}/models"))
    assert table["conversational"][chat] == {"_id": mapping_id, "providerId": "chat-v1", "status": "live"}


def test_ledger_and_reconciliation_on_postgres(pg_stack) -> None:
    from services.reference_provider.app import Knobs, State

    account, provider = unique("user"), unique("ref")
    records = [record(account, provider, estimate=5_000) for _ in range(25)]
    with reference_provider("pg-billing-token") as cost_url, pg_stack.admin() as admin:
        register_provider(admin, provider, cost_url, "Bearer pg-billing-token")
        store(pg_stack, records + records)  # sent twice, stored once
        reconcile(pg_stack)
    line = by_provider(usage(pg_stack, account))[provider]
    oracle = State(Knobs())
    assert line["settledNanoUsd"] == sum(oracle.cost_of(r.provider_request_id) for r in records)
    assert (line["pendingNanoUsd"], line["requests"]) == (0, 25)
