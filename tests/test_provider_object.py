"""OpenRouter's provider object against a small model of its rules (docs/provider-selection.md):
random objects, every field alone and combined, with random candidates whose tool support is
known, known lacking or unknown, and the conflicts between the forms of provider selection.

Pure: the Router's selection functions over made-up candidates; no network."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common import params
from services.common.errors import ApiError
from services.common.pricing import Price
from services.router import selection
from services.router.directory import ProviderEntry

IDS = ("a", "b", "c", "d", "e")
RANK = {p: rank for rank, p in enumerate(reversed(IDS))}  # the default order: e, d, c, b, a
KNOWN = {
    p: ProviderEntry(
        p, f"http://{p}", {}, "Inference-Id", ("conversational",), RANK[p], {f"{p}-m": Price(100 * (i + 1))}
    )
    for i, p in enumerate(IDS)
}
TOOL = {"type": "function", "function": {"name": "f"}}
SUBSETS = st.lists(st.sampled_from(IDS), unique=True, max_size=4)


def route(provider: str, tools: bool | None) -> selection.Route:
    candidate = internal_pb.Candidate(provider=provider, provider_model=f"{provider}-m")
    if tools is not None:
        candidate.supports_tools = tools
    return selection.Route(KNOWN[provider], f"{provider}-m", candidate=candidate)


PROVIDER_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "order": SUBSETS,
        "only": SUBSETS,
        "ignore": SUBSETS,
        "allow_fallbacks": st.booleans(),
        "require_parameters": st.booleans(),
        "sort": st.sampled_from(params.SORTS),
        "max_price": st.just({"prompt": 1000}),
    },
)
CANDIDATES = st.dictionaries(st.sampled_from(IDS), st.sampled_from([True, False, None]), max_size=5)
SUFFIXES = st.sampled_from(["", ":fastest", ":cheapest", ":a", ":c"])


def expected_conflicts(preferences: dict, suffix: str, top_max_price: bool) -> list[set[str]]:
    """The pairs of forms a 400 may name, when the request contradicts itself (the model of the rules)."""
    order, only, ignore = (set(preferences.get(k) or ()) for k in ("order", "only", "ignore"))
    name, found = suffix[1:], []
    pairs = (
        (order & ignore, {"provider.order", "provider.ignore"}),
        (only & ignore, {"provider.only", "provider.ignore"}),
        (only and order - only, {"provider.order", "provider.only"}),
        (name in selection.POLICIES and "sort" in preferences, {f"the model suffix {suffix}", "provider.sort"}),
        (top_max_price and "max_price" in preferences, {"max_price", "provider.max_price"}),
    )
    found = [pair for hit, pair in pairs if hit]
    if name and name not in selection.POLICIES:
        for key, hit in (("order", order), ("only", only), ("ignore", name in ignore)):
            if hit:
                found.append({f"the model suffix {suffix}", f"provider.{key}"})
    return found


def plan(model: str, preferences: object, payload: dict, candidates: dict) -> selection.Fit:
    needs = selection.needs_of(payload, 10, payload.pop("max_price", None))
    chosen = selection.parse_model(model, preferences, KNOWN)
    routes = [route(p, tools) for p, tools in candidates.items()]
    return selection.plan(routes, chosen, [], needs, "conversational", lambda *_: None, (), lambda _: False)


@settings(max_examples=300, derandomize=True)
@given(
    preferences=PROVIDER_OBJECTS,
    candidates=CANDIDATES,
    suffix=SUFFIXES,
    tools=st.booleans(),
    top_max_price=st.booleans(),
)
def test_any_provider_object_routes_as_the_model_of_the_rules_says(
    preferences, candidates, suffix, tools, top_max_price
) -> None:
    payload = {"model": "org/m" + suffix, "messages": [{"role": "user", "content": "x"}], "provider": preferences}
    if tools:
        payload["tools"] = [TOOL]
    if top_max_price:
        payload["max_price"] = {"input": 1000}
    params.check_body(payload, params.CHAT, params.REQUIRED_CHAT)  # every generated object is well typed
    conflicts = expected_conflicts(preferences, suffix, top_max_price)
    try:
        fit = plan(payload["model"], preferences, payload, candidates)
    except ApiError as error:
        if conflicts:
            assert error.reason == "CONFLICTING_PROVIDER_SELECTION" and error.http_status == 400, error.message
            assert any(all(form in error.message for form in pair) for pair in conflicts), (error.message, conflicts)
            return
        fit = None
        failure = error
    assert not conflicts, f"expected a conflict of {conflicts}"

    # The model: which providers may serve, and in which order.
    name = suffix[1:]
    named = [name] if name and name not in selection.POLICIES else list(preferences.get("only") or ())
    ignore = set(preferences.get("ignore") or ())
    pool = [p for p in candidates if (not named or p in named) and p not in ignore]
    strict = preferences.get("require_parameters") is True
    fits = [p for p in pool if not tools or candidates[p] is True or (candidates[p] is None and not strict)]
    order = list(preferences.get("order") or ())
    cheapest = preferences.get("sort") == "price" or name == "cheapest"  # unmeasured: else the default rank

    def key(p: str) -> tuple:
        unknown = tools and candidates[p] is None
        if named and name and name not in selection.POLICIES:
            return (unknown, named.index(p))
        return (unknown, order.index(p) if p in order else len(order), IDS.index(p) if cheapest else RANK[p])

    expected = sorted(fits, key=key)
    if preferences.get("allow_fallbacks") is False:
        expected = expected[:1]
    if fit is None:
        assert not expected, failure.message
        assert failure.http_status == (404 if not pool else 400), failure.message
        for provider in named or candidates:  # each considered provider named with its reasons
            assert f"{provider}:" in failure.message, (provider, failure.message)
        return
    assert [r.provider.id for r in fit.routes] == expected
    considered = named or list(candidates)  # a named provider without a mapping is left out as such
    assert set(expected) | set(fit.left_out) == set(considered)  # every provider considered is accounted for
    assert all(fit.left_out[p] == [(selection.IGNORED, "ignored (provider.ignore)")] for p in ignore & set(considered))


@pytest.mark.parametrize(
    ("preferences", "param"),
    [
        ({"order": "a"}, "provider.order"),
        ({"order": ["a", 1]}, "provider.order"),
        ({"only": [""]}, "provider.only"),
        ({"ignore": ["x" * 97]}, "provider.ignore"),
        ({"ignore": ["a"] * 33}, "provider.ignore"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"require_parameters": 1}, "provider.require_parameters"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"max_price": {"input": 1}}, "provider.max_price"),
        ({"max_price": {"prompt": -1}}, "provider.max_price.prompt"),
        ({"max_price": {}}, "provider.max_price"),
        ({"quantizations": ["int8"]}, "provider.quantizations"),
        (["a"], "provider"),
    ],
)
def test_a_malformed_provider_object_is_a_400_naming_the_field(preferences, param) -> None:
    body = {"model": "org/m", "messages": [{"role": "user", "content": "x"}], "provider": preferences}
    with pytest.raises(ApiError) as raised:
        params.check_body(body, params.CHAT, params.REQUIRED_CHAT)
    assert raised.value.http_status == 400 and raised.value.param == param, raised.value.message


def test_unknown_provider_ids_in_the_object_are_a_400_naming_the_field() -> None:
    with pytest.raises(ApiError) as raised:
        selection.parse_model("org/m", {"only": ["a", "nope"]}, KNOWN)
    assert raised.value.param == "provider.only" and "nope" in raised.value.message


def test_sort_orders_by_price_throughput_and_latency() -> None:
    routes = [route(p, None) for p in ("a", "b", "c")]
    stats = {"a": (10.0, 0.5), "b": (50.0, 0.9), "c": (30.0, 0.1)}  # (tokens/s, time to first token)

    def sorted_by(sort: str) -> list[str]:
        chosen = selection.parse_model("org/m", {"sort": sort}, KNOWN)
        fit = selection.plan(
            list(routes), chosen, [], selection.Needs(), "conversational",
            lambda p, _m: stats[p], (), lambda _: False,
        )  # fmt: skip
        return [r.provider.id for r in fit.routes]

    assert sorted_by("price") == ["a", "b", "c"]  # 100, 200, 300 nano-USD per input token
    assert sorted_by("throughput") == ["b", "c", "a"]
    assert sorted_by("latency") == ["c", "a", "b"]


def test_a_per_provider_route_refuses_an_object_that_routes() -> None:
    with pytest.raises(ApiError) as raised:
        selection.check_path_provider({"order": ["a"]}, "a")
    assert "the route's provider a" in raised.value.message and "provider.order" in raised.value.message
    selection.check_path_provider({"require_parameters": True}, "a")  # no routing: fine
