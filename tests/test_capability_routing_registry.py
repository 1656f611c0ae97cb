"""The Registry's side of capabilities without the network: migration 0009 on SQLite and
PostgreSQL (mappings made before it load with every capability unknown; what is stored reads back
the same), and the index (statuses other than live and staging, candidates' capabilities, change
signatures)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from helpers.migrations import PROVIDER_ROW, REGISTRY_MIGRATIONS, database, execute, upgrade  # noqa: F401 (fixtures)
from sqlmodel import Session

from services.common.db import make_engine
from services.registry.storage import queries
from services.registry.storage.index import MODEL, UNKNOWN, Capabilities, IndexedProvider, Mapping, RegistryIndex

MAPPING_ROW = (
    "INSERT INTO mappings (id, seq, provider, type, task, hf_model, tags_key, provider_model, status, adapter_type, "
    "create_time) VALUES (:id, :seq, 'p', 'model', 'conversational', :model, '', 'pm', 'live', '', :t)"
)


def mappings(url: str) -> dict[str, Capabilities]:
    engine = make_engine(url)
    try:
        return {m.id: m.capabilities for m in queries.load_index(engine).mappings.values()}
    finally:
        engine.dispose()


def set_capabilities(url: str, mapping_id: str, capabilities: Capabilities) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            queries.set_mapping_capabilities(session, mapping_id, capabilities)
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


# --- the index: a status other than live or staging, capabilities on candidates and in change signatures


def index_mapping(seq: int, provider: str, status: str, capabilities: Capabilities = UNKNOWN) -> Mapping:
    return Mapping(
        f"{seq:024x}", seq, provider, MODEL, "conversational", "ns/chat", (), f"pm-{seq}", status, "",
        datetime.now(UTC), capabilities,
    )  # fmt: skip


def test_a_mapping_in_error_is_a_candidate_for_no_one_and_candidates_carry_capabilities() -> None:
    index = RegistryIndex()
    for provider in ("a", "b", "c"):
        index.put_provider(IndexedProvider(provider, "org", 0))
    index.put_model("ns/chat", "text-generation", ["conversational"], "")
    declared = Capabilities(True, None, 4096)
    for mapping in (index_mapping(1, "a", "live", declared), index_mapping(2, "b", "staging"),
                    index_mapping(3, "c", "error")):  # fmt: skip
        index.add_mapping(mapping)
    index.user("member").memberships["org"] = "write"
    for user, usable in (("", ["a"]), ("member", ["a", "b"])):
        resolution = index.resolve("ns/chat", user, "conversational")
        assert [c.provider for c in resolution.candidates] == usable
        assert resolution.candidates[0].capabilities == declared
        excluded = {e.provider: e.status for e in resolution.exclusions}
        assert excluded == ({"b": "staging", "c": "error"} if not user else {"c": "error"})
    assert index.resolve_provider_model("c", "pm-3", "member", "conversational").exclusions[0].status == "error"


def test_a_capability_change_touches_the_models_the_mapping_serves() -> None:
    index = RegistryIndex()
    index.put_provider(IndexedProvider("a", "org", 0))
    index.add_mapping(index_mapping(1, "a", "live"))
    touched = index.replace_provider_mappings("a", [index_mapping(1, "a", "live", Capabilities(False))])
    assert touched.models == frozenset({"ns/chat"})
    assert not index.replace_provider_mappings("a", [index_mapping(1, "a", "live", Capabilities(False))]).models
