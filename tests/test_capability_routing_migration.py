"""Registry migration 0007 (mapping capabilities), on SQLite and PostgreSQL: mappings made
before it load with every capability unknown, and what is stored afterwards reads back the same."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session
from test_registry_names import REGISTRY_MIGRATIONS, database, execute, postgres, upgrade  # noqa: F401 (fixtures)

from services.common.db import make_engine
from services.registry import store
from services.registry.index import UNKNOWN, Capabilities

PROVIDER_ROW = (
    "INSERT INTO providers (id, org, base_url, api_key, tasks, request_id_header, billing_url, "
    "billing_authorization, default_rank, create_time) VALUES ('p', 'o', 'http://x', '', '[]', 'Inference-Id', '', "
    "'', 0, :t)"
)
MAPPING_ROW = (
    "INSERT INTO mappings (id, seq, provider, type, task, hf_model, tags_key, provider_model, status, adapter_type, "
    "create_time) VALUES (:id, :seq, 'p', 'model', 'conversational', :model, '', 'pm', 'live', '', :t)"
)


def mappings(url: str) -> dict[str, Capabilities]:
    engine = make_engine(url)
    try:
        return {m.id: m.capabilities for m in store.load_index(engine).mappings.values()}
    finally:
        engine.dispose()


def set_capabilities(url: str, mapping_id: str, capabilities: Capabilities) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            store.set_mapping_capabilities(session, mapping_id, capabilities)
            session.commit()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "declared",
    [Capabilities(True, False, 128_000), Capabilities(False, True, 1), Capabilities(None, True, None)],
)
def test_mappings_before_the_migration_are_unknown_and_stored_capabilities_read_back(
    database: str,  # noqa: F811 (the imported fixture)
    declared: Capabilities,
) -> None:
    upgrade(database, REGISTRY_MIGRATIONS, "0006")
    now = datetime.now(UTC)
    execute(database, PROVIDER_ROW, [{"t": now}])
    rows = [{"id": f"{i:024x}", "seq": i, "model": f"ns/m{i}", "t": now} for i in (1, 2)]
    execute(database, MAPPING_ROW, rows)
    upgrade(database, REGISTRY_MIGRATIONS, "head")
    assert mappings(database) == {f"{1:024x}": UNKNOWN, f"{2:024x}": UNKNOWN}
    set_capabilities(database, f"{1:024x}", declared)
    assert mappings(database) == {f"{1:024x}": declared, f"{2:024x}": UNKNOWN}
