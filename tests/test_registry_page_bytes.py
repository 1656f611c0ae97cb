"""The Registry's listings are bounded in bytes, not only in items: whatever the partners and
their upstreams put in a mapping (provider model ids and tags at their caps, in the characters
that JSON writes longest; probe reasons), a ListModelMappings page stays within MAX_PAGE_BYTES as
Envoy's transcoder writes it, ending early with a next_page_token, and paging through returns
every mapping once; the partners listing stays within MAX_LISTING_BYTES once probes and checks
added details to a full one. Sizes are measured by this module's own model of Envoy's JSON
writer (protobuf's json/internal/writer.cc), not by the code under test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from google.protobuf import json_format
from helpers.edge import envoy_json_bytes, envoy_message_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.registry.v1 import registry_service_pb2 as registry_pb

from services.common.errors import ApiError
from services.common.paging import (
    MAX_LISTING_BYTES,
    MAX_PAGE_BYTES,
    MAX_PAGE_SIZE,
    PAGE_ENVELOPE_BYTES,
    fitted_page,
    key_after,
    next_page_token,
    pair_after,
)
from services.registry.api.partners import RegistryServicer, mapping_message, table_entry
from services.registry.domain import validation as v
from services.registry.storage.index import (
    ERROR,
    LIVE,
    MODEL,
    TAG_FILTER,
    Conformance,
    IndexedProvider,
    Mapping,
    RegistryIndex,
)
from services.registry.storage.texts import MAX_REASON

PROVIDER = "p"
# ...and the characters a partner may send that it writes longest: \udb40\udc41 (12 bytes) for a
# one-character tag symbol, \u003c (6 bytes) for '<'.
LONGEST = "\U000e0041"
CHECKED = Conformance(datetime(2026, 1, 2, 3, 4, 5, 123456789 // 1000, tzinfo=UTC), False, 1, 7, 2, True, True)


def mapping(
    seq: int, *, tags: int = 0, fill: str = LONGEST, reason: str = "", status: str = LIVE, length: int = 0
) -> Mapping:
    """A mapping with a provider model id of `length` characters (0: at its cap) and `tags` tags at
    theirs, in `fill` characters."""
    tag_list = tuple(sorted(f"{seq}-{i}-".ljust(v.MAX_TAG, fill) for i in range(tags)))
    return Mapping(
        id=f"{seq:024x}", seq=seq, provider=PROVIDER, type=TAG_FILTER if tags else MODEL, task="text-to-image",
        hf_model="" if tags else f"ns/model-{seq}", tags=tag_list,
        provider_model=f"{seq}/".ljust(length or v.MAX_PROVIDER_MODEL, fill), status=status,
        adapter_type="lora" if tags else "", create_time=datetime.now(UTC), status_reason=reason,
        conformance=CHECKED if reason else None,
    )  # fmt: skip


def servicer_of(*mappings: Mapping) -> RegistryServicer:
    """The partners servicer over an index holding these mappings (what the listings read)."""
    index = RegistryIndex()
    index.put_provider(IndexedProvider(PROVIDER, "org", 0))
    for each in mappings:
        index.add_mapping(each)

    async def fresh(lookup: Callable[[], object]) -> object:
        return lookup()

    state = SimpleNamespace(index=index, fresh=fresh, provider=lambda name: index.providers[name])
    return RegistryServicer(state, checker=None)  # type: ignore[arg-type]  # what the listings use of a state


async def all_pages(servicer: RegistryServicer, page_size: int) -> list[registry_pb.ListModelMappingsResponse]:
    pages, token = [], ""
    while True:
        request = registry_pb.ListModelMappingsRequest(provider=PROVIDER, page_size=page_size, page_token=token)
        pages.append(await servicer.ListModelMappings(request, None))
        if not (token := pages[-1].next_page_token):
            return pages


# --- ListModelMappings ------------------------------------------------------------------------


async def test_pages_of_maximal_mappings_stay_within_the_budget_and_list_each_mapping_once() -> None:
    """1,200 mappings in error, each at every cap in the longest characters with a maximal
    probe reason (1,000 of them are 5.7 MB of JSON; pages cut by their binary size came out
    2.4 MB), and a few tag-filters of 100 tags at theirs: every page at most MAX_PAGE_BYTES,
    every mapping exactly once, in order."""
    reason = LONGEST * MAX_REASON
    mappings = [mapping(seq, reason=reason, status=ERROR) for seq in range(1, 1201)]
    mappings += [mapping(seq, tags=v.MAX_TAGS_PER_FILTER, reason=reason, status=ERROR) for seq in range(1201, 1204)]
    pages = await all_pages(servicer_of(*mappings), MAX_PAGE_SIZE)

    sizes = [envoy_message_bytes(page) for page in pages]
    assert max(sizes) <= MAX_PAGE_BYTES, sizes
    assert all(page.model_mappings for page in pages)
    assert len(pages[0].model_mappings) < MAX_PAGE_SIZE and pages[0].next_page_token  # it ended early
    listed = [m.id for page in pages for m in page.model_mappings]
    assert listed == [m.id for m in mappings]  # each once, oldest first
    assert {m.status_reason for page in pages for m in page.model_mappings} == {reason}  # nothing cut


async def test_a_page_of_small_mappings_still_holds_page_size_of_them() -> None:
    mappings = [mapping(seq, fill="m", length=64) for seq in range(1, MAX_PAGE_SIZE + 2)]
    first, second = await all_pages(servicer_of(*mappings), MAX_PAGE_SIZE)
    assert len(first.model_mappings) == MAX_PAGE_SIZE
    assert [m.id for m in second.model_mappings] == [mappings[-1].id] and not second.next_page_token


def test_one_mapping_at_every_cap_fits_a_page_alone() -> None:
    """A page holds at least one item: no item may be larger than the budget."""
    largest = mapping(1, tags=v.MAX_TAGS_PER_FILTER, reason=LONGEST * MAX_REASON, status=ERROR)
    assert envoy_message_bytes(mapping_message(largest)) <= MAX_PAGE_BYTES - PAGE_ENVELOPE_BYTES


# --- the shared mechanism of every paged listing ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=40), st.booleans())
def test_fitted_pages_resume_after_their_last_item(lengths: list[int], more: bool) -> None:
    """Any item sizes: a page within the budget (one item alone may be all of it), and a token that
    resumes right after its last item whenever it ended early or more follow."""
    messages = [registry_pb.ModelMapping(id=f"{i:04d}", status_reason="<" * n) for i, n in enumerate(lengths)]
    keys = [m.id for m in messages]
    page, token = fitted_page("listing", keys, iter(messages), more)
    assert page == messages[: len(page)] and page
    assert len(page) == 1 or envoy_json_bytes([json_format.MessageToDict(m) for m in page]) <= MAX_PAGE_BYTES
    ended_early = len(page) < len(messages)
    assert token == (next_page_token("listing", keys[len(page) - 1]) if ended_early or more else "")


# --- the partners listing (one document, not paged) ------------------------------------------


def table_of(mappings: list[Mapping]) -> dict:
    table: dict[str, dict] = {}
    for each in mappings:
        key, value = table_entry(each)
        table.setdefault(each.task, {})[key] = value
    return table


TEXT = st.text(st.sampled_from(["a", "<", '"', "\\", "é", "中", "\u2028", "\u00ad", LONGEST, "😀", " "]), max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), TEXT, st.lists(TEXT, max_size=8), TEXT, st.booleans()), min_size=1, max_size=20)
)
def test_the_listing_estimate_bounds_the_json_envoy_writes(entries: list) -> None:
    """What admission counts per mapping is at least its entry's JSON, escapes included."""
    mappings = [
        Mapping(id=f"{i:024x}", seq=i, provider=PROVIDER, type=MODEL if is_model else TAG_FILTER,
                task="text-to-image", hf_model=f"ns/m{i}" if is_model else "",
                tags=() if is_model else tuple(sorted({f"t{i}", *(t.replace(",", "") for t in tags if t.strip())})),
                provider_model=f"pm{i}{name}", status=ERROR if reason else "staging",
                adapter_type="" if is_model else "lora", create_time=datetime.now(UTC), status_reason=reason,
                conformance=CHECKED if checked else None)
        for i, (is_model, name, tags, reason, checked) in enumerate(entries)
    ]  # fmt: skip
    assert envoy_json_bytes(table_of(mappings)) <= sum(m.listing_bytes for m in mappings)


@pytest.mark.parametrize("fill", ["m", "<"])
async def test_reasons_added_to_a_full_listing_keep_it_within_its_size(fill: str) -> None:
    """Mappings admitted until the listing is full (as CreateModelMapping admits them), a few
    deleted, then every other one fails its probes with a maximal reason: the listing still
    answers within MAX_LISTING_BYTES, every entry listed, the oldest ones with their details."""
    servicer = servicer_of()
    index, seq = servicer.index, 0
    while index.listing_bytes[PROVIDER] + (candidate := mapping(seq + 1, fill=fill)).listing_bytes <= MAX_LISTING_BYTES:
        index.add_mapping(candidate)
        seq += 1
    for deleted in range(seq - 9, seq + 1):  # room for a few entries' details
        index.remove_mapping(f"{deleted:024x}")
    for each in list(index.provider_mappings[PROVIDER].values()):
        index.remove_mapping(each.id)
        index.add_mapping(mapping(each.seq, fill=fill, reason="HTTP 418: " + "<" * MAX_REASON, status=ERROR))
    request = registry_pb.GetProviderMappingTableRequest(provider=PROVIDER)
    listing = json_format.MessageToDict(await servicer.GetProviderMappingTable(request, None))
    assert envoy_json_bytes(listing) <= MAX_LISTING_BYTES
    entries = {e["_id"]: e for e in listing["text-to-image"].values()}
    in_order = [entries[f"{n:024x}"] for n in range(1, seq - 9)]
    assert len(entries) == len(in_order) and all(e["status"] == ERROR for e in in_order)
    shown = ["statusReason" in e for e in in_order]
    assert shown[0] and not shown[-1] and shown == sorted(shown, reverse=True)  # the oldest ones
    assert in_order[0]["statusReason"] == "HTTP 418: " + "<" * MAX_REASON and "conformance" in in_order[0]


def test_the_longest_key_a_listing_pages_by_makes_a_token_it_takes_back() -> None:
    """A provider's health listing pages by provider model id (256 characters, 4 bytes each at most):
    its next page's token must be one the listing takes (it was a 400 past about 135 bytes, which
    broke every Router's load of the health records)."""
    provider, model = "p" * 96, "\U0001f600" * 256
    for listing, key in ((f"providerHealth/{provider}", model), ("modelHealth", f"{provider}\n{model}")):
        assert key_after(listing, next_page_token(listing, key)) == key


@pytest.mark.parametrize("fill", ["模", "é", "😀"])
def test_non_ascii_counts_as_envoy_writes_it_plain_utf8(fill: str) -> None:
    """Envoy writes non-ASCII as UTF-8, not escaped: admission counts it so (counted as a 6-byte
    escape, a listing of such provider model ids was full at half its size)."""
    entry = mapping(1, fill=fill)
    real = envoy_json_bytes(table_of([entry]))
    assert real <= entry.listing_bytes <= real + 64


@pytest.mark.parametrize("key", ["a\x00b", "\x1b[31m", "x\x7f"])
def test_a_page_token_whose_key_holds_a_control_character_is_refused(key: str) -> None:
    with pytest.raises(ApiError) as refused:
        key_after("tokens", next_page_token("tokens", key))
    assert refused.value.reason == "INVALID_PAGE_TOKEN"


def test_a_two_part_listings_token_needs_both_parts() -> None:
    assert pair_after("modelHealth", next_page_token("modelHealth", "p\nm")) == ("p", "m")
    with pytest.raises(ApiError):
        pair_after("modelHealth", next_page_token("modelHealth", "abc"))
