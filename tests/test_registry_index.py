"""The Registry's in-memory index on its own: precedence, visibility and the tag-filter index."""

from __future__ import annotations

from datetime import UTC, datetime

from services.registry.storage.index import MODEL, TAG_FILTER, IndexedProvider, Mapping, RegistryIndex


def mapping(
    seq: int, provider: str, *, hf_model: str = "", tags: tuple[str, ...] = (), status: str = "live"
) -> Mapping:
    return Mapping(
        id=f"{seq:024x}",
        seq=seq,
        provider=provider,
        type=TAG_FILTER if tags else MODEL,
        task="text-to-image",
        hf_model=hf_model,
        tags=tuple(sorted(tags)),
        provider_model=f"pm-{seq}",
        status=status,
        adapter_type="lora" if tags else "",
        create_time=datetime.now(UTC),
    )


def index_with(*mappings: Mapping) -> RegistryIndex:
    index = RegistryIndex()
    for provider, rank in (("a", 1), ("b", 0)):
        index.put_provider(IndexedProvider(provider, f"org-{provider}", rank))
    index.put_model("ns/lora", "text-to-image", ["lora", "base:x", "style"], "w.safetensors")
    for m in mappings:
        index.add_mapping(m)
    return index


def test_tag_filters_are_bucketed_by_their_rarest_tag() -> None:
    filters = [mapping(i, "a", tags=("lora", f"base:{i}")) for i in range(1, 200)]
    index = index_with(*filters)
    assert {f.key_tag for f in filters[1:]} == {f"base:{i}" for i in range(2, 200)}
    # a lookup visits only the buckets of the model's tags
    assert [c.mapping_id for c in index.resolve("ns/lora", "", "text-to-image").candidates] == []
    index.put_model("ns/lora", "text-to-image", ["lora", "base:7"], "")
    assert [c.provider_model for c in index.resolve("ns/lora", "", "text-to-image").candidates] == ["pm-7"]


def test_precedence_order_and_staging() -> None:
    index = index_with(
        mapping(1, "a", tags=("lora",)),
        mapping(2, "a", tags=("base:x",)),
        mapping(3, "a", tags=("lora", "base:x")),
        mapping(4, "b", tags=("lora",)),
        mapping(5, "b", hf_model="ns/lora", status="staging"),
    )
    resolution = index.resolve("ns/lora", "", "text-to-image")
    assert [(c.provider, c.provider_model) for c in resolution.candidates] == [("b", "pm-4"), ("a", "pm-3")]
    assert resolution.candidates[1].adapter.weights_path == "w.safetensors"
    index.user("member").memberships["org-b"] = "read"
    resolution = index.resolve("ns/lora", "member", "text-to-image", providers=["a", "b"])
    assert [(c.provider, c.provider_model, c.adapter) for c in resolution.candidates] == [
        ("a", "pm-3", resolution.candidates[0].adapter),
        ("b", "pm-5", None),
    ]
    index.remove_mapping(f"{3:024x}")
    assert index.resolve("ns/lora", "", "text-to-image").candidates[1].provider_model == "pm-1"
    index.remove_provider("b")
    assert [c.provider for c in index.resolve("ns/lora", "member", "text-to-image").candidates] == ["a"]
    assert not index.resolve("ns/missing", "", "text-to-image").model_found
