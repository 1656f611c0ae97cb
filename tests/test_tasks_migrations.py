"""The migrations for tasks on SQLite and PostgreSQL: Registry 0011 (a price per unit; rows from
before read 0) with the mappings of tasks Switchboard does not serve (stored before they were
refused: listed as error with the reason, never routed nor probed), and Billing 0009 (each
record's unit and units; rows from before read "" and 0)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from helpers.billing import record, unique
from helpers.migrations import (  # noqa: F401 (fixtures)
    BILLING_MIGRATIONS,
    PROVIDER_ROW,
    REGISTRY_MIGRATIONS,
    database,
    execute,
    upgrade,
)
from sqlmodel import Session

from services.billing import ledger
from services.billing.servicer import ledger_row, usage_message
from services.billing.units import DEFAULT_UNIT_NANO_USD
from services.common.db import Database, make_engine
from services.common.tasks import SERVED_TASKS
from services.registry.storage import queries
from services.registry.storage.index import ERROR, LIVE

pytestmark = pytest.mark.slow  # PostgreSQL runs as a process of its own

UNSERVED = "image-to-text"
MAPPING_ROW = (
    "INSERT INTO mappings (id, seq, provider, type, task, hf_model, tags_key, provider_model, status, adapter_type, "
    "create_time) VALUES (:id, :seq, 'p', 'model', :task, :model, '', 'pm', 'live', '', :t)"
)
PRICE_ROW = (
    "INSERT INTO prices (provider, provider_model, input_token_nano_usd, output_token_nano_usd, request_nano_usd, "
    "image_nano_usd) VALUES ('p', 'pm', 1, 2, 3, 4)"
)


def test_registry_0011_prices_per_unit_and_unserved_mappings_listed_never_routed(
    database: str,  # noqa: F811 (the imported fixture)
) -> None:
    assert UNSERVED not in SERVED_TASKS
    upgrade(database, REGISTRY_MIGRATIONS, "0009")
    now = datetime.now(UTC)
    execute(database, PROVIDER_ROW, [{"t": now}])
    execute(database, PRICE_ROW)
    rows = [
        {"id": f"{1:024x}", "seq": 1, "task": "conversational", "model": "ns/chat", "t": now},
        {"id": f"{2:024x}", "seq": 2, "task": UNSERVED, "model": "ns/captioner", "t": now},
    ]
    execute(database, MAPPING_ROW, rows)
    upgrade(database, REGISTRY_MIGRATIONS, "head")
    assert execute(database, "SELECT unit_nano_usd FROM prices") == [(0,)]
    execute(database, "UPDATE prices SET unit_nano_usd = :n", [{"n": 2**63 - 1}])  # 64 bits, as the check allows
    assert execute(database, "SELECT unit_nano_usd FROM prices") == [(2**63 - 1,)]
    engine = make_engine(database)
    try:
        index = queries.load_index(engine)
        chat, captioner = index.mappings[f"{1:024x}"], index.mappings[f"{2:024x}"]
        assert chat.status == LIVE
        assert captioner.status == ERROR and UNSERVED in captioner.status_reason
        assert "not served" in captioner.status_reason
        index.put_model("ns/captioner", UNSERVED, [], "")
        assert index.resolve("ns/captioner", "", UNSERVED).candidates == []
        with Session(engine) as session:
            claimed = queries.claim_probes(session, "me", now.timestamp(), now.timestamp() + 60, 10)
        assert claimed == [f"{1:024x}"]
    finally:
        engine.dispose()


def test_billing_0009_units_per_record(database: str) -> None:  # noqa: F811 (the imported fixture)
    upgrade(database, BILLING_MIGRATIONS, "0008")
    account, now = unique("user"), datetime.now(UTC)
    before = ledger_row(record(account, estimate=700), now)
    del before["unit"], before["units"]
    columns = ", ".join(before)
    execute(database, f"INSERT INTO ledger ({columns}, claimed_until) VALUES (:{', :'.join(before)}, 0)", [before])
    upgrade(database, BILLING_MIGRATIONS, "head")
    assert execute(database, "SELECT unit, units FROM ledger") == [("", 0)]
    spoken = record(account, estimate=0)
    spoken.task, spoken.unit, spoken.units = "text-to-speech", "character", 10**9
    db = Database(database)
    try:
        asyncio.run(db.run(lambda s: ledger.record_entries(s, [ledger_row(spoken, now)])))
        start, end = ledger.month_bounds(now)
        report = asyncio.run(db.run(lambda s: ledger.usage_report(s, account, start, end)))
    finally:
        db.close()
    lines = {line.task: line for line in usage_message(account, "", report).by_task}
    assert (lines["conversational"].unit, lines["conversational"].units) == ("token", 0)
    assert (lines["text-to-speech"].unit, lines["text-to-speech"].units) == ("character", 10**9)
    # no estimate: its units at the unit's default price
    assert lines["text-to-speech"].pending_nano_usd_exact == 10**9 * DEFAULT_UNIT_NANO_USD["character"]
