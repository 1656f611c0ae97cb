"""GET /api/models/{id}'s answer built from the index, without a stack: for any mappings, the
inferenceProviderMapping lists exactly the providers the caller may use or that fail their probes,
one entry each, in the caller's routing order, with the model's own task first."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import ApiError
from services.registry.domain.hub_models import hub_model
from services.registry.storage.index import ERROR, LIVE, MODEL, STAGING, IndexedProvider, Mapping, RegistryIndex

MODEL_ID = "ns/embedder"
PROVIDERS = ["a", "b", "c", "d"]
TASKS = ["feature-extraction", "sentence-similarity"]  # the model's own task first
mappings = st.lists(
    st.tuples(st.sampled_from(PROVIDERS), st.sampled_from(TASKS), st.sampled_from([LIVE, STAGING, ERROR])),
    max_size=8,
    unique_by=lambda m: (m[0], m[1]),
)


def index_of(rows: list[tuple[str, str, str]], member_of: str = "") -> RegistryIndex:
    index = RegistryIndex()
    for rank, provider in enumerate(PROVIDERS):
        index.put_provider(IndexedProvider(provider, f"org-{provider}", rank))
    index.put_model(MODEL_ID, "feature-extraction", ["feature-extraction"], "")
    if member_of:
        index.user("someone").memberships[f"org-{member_of}"] = "read"
    for seq, (provider, task, status) in enumerate(rows, 1):
        mapping = Mapping(
            f"{seq:024x}", seq, provider, MODEL, task, MODEL_ID, (), f"{provider}-{task}", status, "", datetime.now(UTC)
        )
        index.add_mapping(mapping)
    return index


@given(rows=mappings, member_of=st.sampled_from(["", *PROVIDERS]))
def test_the_provider_mapping_lists_each_usable_provider_once_in_routing_order(rows, member_of: str) -> None:
    index = index_of(rows, member_of)
    user = "someone" if member_of else None
    answer = hub_model(index, MODEL_ID, user, ["inferenceProviderMapping"])
    listed = answer["inferenceProviderMapping"]

    def usable(provider: str, status: str) -> bool:
        return status in (LIVE, ERROR) or (status == STAGING and provider == member_of)

    expected = {p for p, _, status in rows if usable(p, status)}
    assert set(listed) == expected
    for provider, entry in listed.items():
        mine = {task: status for p, task, status in rows if p == provider and usable(p, status)}
        routed = [task for task in TASKS if mine.get(task) in (LIVE, STAGING)]
        # the own task first among those routed; a provider only failing its probes is listed as error
        assert entry["task"] == (routed[0] if routed else next(t for t in TASKS if t in mine))
        assert entry["status"] == mine[entry["task"]]
        assert entry["providerId"] == f"{provider}-{entry['task']}" and entry["type"] == "single-model"
    routed_order = [p for p in listed if listed[p]["status"] != ERROR]
    # the own task's providers first, then the other task's; each in default rank order
    by_task = sorted(routed_order, key=lambda p: (TASKS.index(listed[p]["task"]), PROVIDERS.index(p)))
    assert routed_order == by_task
    assert all(listed[p]["status"] == ERROR for p in list(listed)[len(routed_order) :])


def test_unknown_models_and_expand_values_are_refused() -> None:
    index = index_of([])
    with pytest.raises(ApiError, match="not in the catalog"):
        hub_model(index, "ns/nothing", None, [])
    with pytest.raises(ApiError, match="not a model property"):
        hub_model(index, MODEL_ID, None, ["secrets"])
    assert hub_model(index, MODEL_ID, None, ["likes", "pipeline_tag"]) == {
        "_id": MODEL_ID,
        "id": MODEL_ID,
        "pipeline_tag": "feature-extraction",
    }
