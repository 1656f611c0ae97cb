"""Keyed cache invalidation: a change notice names what it touched, and a Router drops
those cached answers only. Whatever the changes, no answer the Registry would now give
differently stays cached (hypothesis drives the Registry's index through random
mapping, provider and membership changes and checks every cache key), and an answer
the change did not touch stays cached."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.registry.domain.changes import Change
from services.registry.storage.index import (
    MODEL,
    TAG_FILTER,
    IndexedProvider,
    Mapping,
    RegistryIndex,
    Touched,
    UserEntry,
)
from services.router.directory import Directory, _resolution_touched

MODELS = {"m0": ("a",), "m1": ("a", "b"), "m2": ("b", "c"), "m3": ()}
ALIASES = {"alias-of-m1": "m1"}  # a Router caches answers by the name asked
TAGS = ("a", "b", "c")
PROVIDERS = ("p0", "p1")
ORGS = ("o0", "o1")
USERS = ("", "u0", "u1")
TASKS = ("conversational", "text-to-image")
PROVIDER_MODELS = ("x", "y")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count()

mapping_specs = st.tuples(
    st.sampled_from(TASKS),
    st.one_of(st.sampled_from(sorted(MODELS)), st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True)),
    st.sampled_from(PROVIDER_MODELS),
    st.sampled_from(("live", "staging")),
)
operations = st.one_of(
    st.tuples(
        st.just("mappings"),
        st.sampled_from(PROVIDERS),
        st.lists(mapping_specs, max_size=4),
        st.sampled_from(("drop", "keep", "flip status")),  # what becomes of the provider's mappings
    ),
    st.tuples(st.just("provider"), st.sampled_from(PROVIDERS), st.sampled_from(ORGS), st.integers(-2, 2)),
    st.tuples(st.just("delete provider"), st.sampled_from(PROVIDERS)),
    st.tuples(st.just("membership"), st.sampled_from(USERS[1:]), st.sets(st.sampled_from(ORGS))),
)


def new_mapping(provider: str, spec: tuple) -> Mapping:
    task, target, provider_model, status = spec
    is_model = isinstance(target, str)
    return Mapping(
        id=f"map-{next(_ids)}",
        seq=next(_ids),
        provider=provider,
        type=MODEL if is_model else TAG_FILTER,
        task=task,
        hf_model=target if is_model else "",
        tags=() if is_model else tuple(sorted(target)),
        provider_model=provider_model,
        status=status,
        adapter_type="" if is_model else "lora",
        create_time=NOW,
    )


def fresh(mappings) -> list[Mapping]:
    """Copies as a database re-read makes them (the index annotates the ones it holds)."""
    return [replace(m, candidate=None, key_tag="", precedence=(0, 0, 0)) for m in mappings]


def world() -> RegistryIndex:
    index = RegistryIndex()
    for model, tags in MODELS.items():
        index.put_model(model, "text-generation", tags, "")
    for name, target in ALIASES.items():
        index.put_alias(name, target)
    for rank, (provider, org) in enumerate(zip(PROVIDERS, ORGS, strict=True)):
        index.put_provider(IndexedProvider(provider, org, rank))
    index.replace_user("u0", UserEntry({"o0": "read"}), {})
    index.replace_user("u1", UserEntry(), {})
    return index


def apply(index: RegistryIndex, operation: tuple) -> Change:
    """One change as the Registry applies it (RegistryState.apply)."""
    change = apply_to_index(index, operation)
    return change._replace(touched=index.with_aliases(change.touched))


def apply_to_index(index: RegistryIndex, operation: tuple) -> Change:
    """The database's new state, re-read, applied to the index."""
    kind, key = operation[0], operation[1]
    if kind == "mappings":
        _, provider, specs, old = operation
        if provider not in index.providers:
            return Change(1, internal_pb.CHANGE_KIND_MAPPING, provider, Touched())
        kept = fresh(index.provider_mappings[provider].values()) if old != "drop" else []
        for mapping in kept if old == "flip status" else ():
            mapping.status = "live" if mapping.status == "staging" else "staging"
        mappings = {m.unique_key: m for m in kept + [new_mapping(provider, s) for s in specs]}
        touched = index.replace_provider_mappings(provider, mappings.values())
        return Change(1, internal_pb.CHANGE_KIND_MAPPING, provider, touched)
    if kind == "provider":
        _, provider, org, rank = operation
        touched = index.replace_provider(
            provider, IndexedProvider(provider, org, rank), fresh(index.provider_mappings.get(provider, {}).values())
        )
        return Change(1, internal_pb.CHANGE_KIND_PROVIDER, provider, touched)
    if kind == "delete provider":
        return Change(1, internal_pb.CHANGE_KIND_PROVIDER, key, index.replace_provider(key, None, []))
    _, user, orgs = operation
    touched = index.replace_user(user, UserEntry(dict.fromkeys(orgs, "read")), {})
    return Change(1, internal_pb.CHANGE_KIND_IDENTITY, user, touched)


def answers(index: RegistryIndex) -> dict[tuple[str, ...], object]:
    """Every answer a Router may have cached, by its cache key."""
    cached: dict[tuple[str, ...], object] = {}
    for model, user, task in itertools.product([*MODELS, *ALIASES], USERS, TASKS):
        cached[("model", model, user, task)] = index.resolve(model, user, task)
    for provider, provider_model, user, task in itertools.product(PROVIDERS, PROVIDER_MODELS, USERS, TASKS):
        if provider in index.providers:
            resolution = index.resolve_provider_model(provider, provider_model, user, task)
            cached[("provider", provider, provider_model, user, task)] = resolution
    return cached


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, min_size=1, max_size=8))
def test_no_changed_answer_stays_cached(steps: list[tuple]) -> None:
    index = world()
    after = answers(index)
    for operation in steps:
        before = after  # the answers after one step are those before the next
        change = apply(index, operation).message()
        after = answers(index)
        stale = [key for key, answer in before.items() if after.get(key) != answer]
        kept = [key for key in stale if not _resolution_touched(key, change)]
        assert kept == [], f"{operation} changed {kept} but the notice did not touch them"


class FakeRegistry:
    """Answers every lookup and counts the lookups."""

    def __init__(self) -> None:
        self.calls = 0

    async def AuthenticateToken(self, request, **_):
        self.calls += 1
        return internal_pb.Caller(user="u-" + request.token)

    async def ResolveModel(self, request, **_):
        self.calls += 1
        return internal_pb.ResolveModelResponse(model_found=True)


async def test_a_change_drops_only_the_answers_it_touched() -> None:
    registry = FakeRegistry()
    directory = Directory(registry)
    directory.watching = True

    async def lookups() -> int:
        """Looks everything up again; how many lookups the cache could not answer."""
        before = registry.calls
        for token in ("alice", "bob"):
            await directory.authenticate(token)
        for model, user in itertools.product(("m0", "m1"), ("u-alice", "u-bob")):
            await directory.resolve(model, user, "conversational")
        return registry.calls - before

    assert await lookups() == 6
    assert await lookups() == 0
    token_hash = hashlib.sha256(b"bob").hexdigest()
    notices = [
        (internal_pb.CHANGE_KIND_MAPPING, "p0", Touched(models=frozenset({"m0"})), 2),
        (internal_pb.CHANGE_KIND_MODEL, "m1", Touched(models=frozenset({"m1"})), 2),
        (internal_pb.CHANGE_KIND_IDENTITY, "u-alice", Touched(), 3),  # alice's caller and resolutions
        (internal_pb.CHANGE_KIND_IDENTITY, "nobody", Touched(token_hashes=frozenset({token_hash})), 1),
        (internal_pb.CHANGE_KIND_MAPPING, "p1", Touched(all_models=True), 4),
        (internal_pb.CHANGE_KIND_PROVIDER, "p1", Touched(), 0),
        (internal_pb.CHANGE_KIND_UNSPECIFIED, "", Touched(), 6),
    ]
    for kind, key, touched, refetched in notices:
        directory.invalidate(Change(1, kind, key, touched).message())
        assert await lookups() == refetched, (kind, key, touched)
