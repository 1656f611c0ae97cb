"""Provider selection: the `provider` field, policy suffixes and candidate order.

Pure functions over the Registry's candidates, the provider table and the
Router's measurements, so the rules can be tested without a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.errors import ApiError, invalid_argument, not_found
from services.common.pricing import estimate_nano_usd
from services.common.providers import ProviderEntry, Route

POLICIES = ("fastest", "cheapest", "preferred")
SHOWN_UNKNOWN = 5  # unknown provider ids an error names
DEFAULT_POLICY = "fastest"
# The usage a :cheapest comparison prices (a typical short chat turn, or one image).
TYPICAL_INPUT_TOKENS = 500
TYPICAL_OUTPUT_TOKENS = 200


@dataclass(frozen=True)
class Selection:
    """What the caller asked for: a hub model id, and either providers or a policy."""

    model: str
    providers: tuple[str, ...] = ()
    policy: str = DEFAULT_POLICY


def parse_providers(value: object, known: dict[str, ProviderEntry]) -> tuple[str, ...]:
    """The `provider` field: ids separated by spaces, in order; 400 naming unknown ones."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise invalid_argument(
            "INVALID_REQUEST", "provider must be a string of provider ids separated by spaces", "provider"
        )
    ids = tuple(dict.fromkeys(value.split()))
    _check_known(ids, known, "provider")
    return ids


def _check_known(ids: Sequence[str], known: dict[str, ProviderEntry], param: str) -> None:
    """A 400 naming the ids no provider has, if any."""
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = ", ".join(unknown[:SHOWN_UNKNOWN]) + (
            f" and {len(unknown) - SHOWN_UNKNOWN} more" if len(unknown) > SHOWN_UNKNOWN else ""
        )
        raise invalid_argument("UNKNOWN_PROVIDER", f"unknown provider(s): {shown}", param)


def parse_model(model: str, provider_field: object, known: dict[str, ProviderEntry]) -> Selection:
    """Splits a policy or provider suffix off a hub model id (no model id has a colon: any other
    suffix is an unknown provider, a 400); the `provider` field wins over a suffix."""
    providers = parse_providers(provider_field, known)
    base, colon, suffix = model.rpartition(":")
    if not (colon and base and suffix):
        return Selection(model, providers)
    if suffix in POLICIES:
        return Selection(base, providers, suffix)
    _check_known((suffix,), known, "model")
    return Selection(base, providers or (suffix,))


def routes_of(
    candidates: Sequence[internal_pb.Candidate], known: dict[str, ProviderEntry], hub_url: str
) -> list[Route]:
    """Candidates as routes; a tag-filter candidate carries its adapter's weights URL."""
    routes = []
    for candidate in candidates:
        provider = known.get(candidate.provider)
        if provider is None:
            continue
        if candidate.HasField("adapter") and candidate.adapter.weights_path:
            adapter = candidate.adapter
            path = f"{hub_url.rstrip('/')}/{adapter.model}/resolve/main/{adapter.weights_path}"
            routes.append(Route(provider, adapter.base_provider_model or candidate.provider_model, path))
        else:
            routes.append(Route(provider, candidate.provider_model))
    return routes


def pick_requested(routes: list[Route], requested: tuple[str, ...], why_not: dict[str, str], model: str) -> list[Route]:
    """The routes of the requested providers, in the caller's order; 404 saying why when none serves it."""
    by_provider: dict[str, list[Route]] = {}
    for route in routes:
        by_provider.setdefault(route.provider.id, []).append(route)
    chosen = [route for provider in requested for route in by_provider.get(provider, [])]
    if not chosen:
        reasons = "; ".join(f"{p}: {why_not.get(p, 'no mapping for this model')}" for p in requested)
        raise not_found("MODEL_NOT_AVAILABLE", f"no requested provider serves {model} ({reasons})")
    return chosen


def order_routes(
    routes: list[Route],
    policy: str,
    task: str,
    measured: Callable[[str, str], tuple[float, float] | None],
    preferred: Sequence[str] = (),
) -> list[Route]:
    """Routes in the policy's order; ties (and unmeasured providers) by the operator's default rank."""
    position = {route.provider.id: i for i, route in enumerate(routes)}

    def default(route: Route) -> tuple[int, int]:
        return route.provider.default_rank, position[route.provider.id]

    def fastest(route: Route) -> tuple:
        stats = measured(route.provider.id, route.provider_model)
        if stats is None:
            return (1, 0.0, 0.0, *default(route))
        throughput, ttft = stats
        return (0, -throughput, ttft, *default(route))

    if policy == "cheapest":

        def cheapest(route: Route) -> tuple:
            price = route.provider.prices.get(route.provider_model)
            if price is None or not price.is_set:
                return (1, 0, *default(route))
            cost = estimate_nano_usd(
                price, task, input_tokens=TYPICAL_INPUT_TOKENS, output_tokens=TYPICAL_OUTPUT_TOKENS, images=1
            )
            return (0, cost, *default(route))

        return sorted(routes, key=cheapest)
    if policy == "preferred" and preferred:
        rank = {provider: i for i, provider in enumerate(preferred)}
        return sorted(routes, key=lambda r: (rank.get(r.provider.id, len(rank)), *fastest(r)))
    return sorted(routes, key=fastest)


def explain_no_candidate(answer: internal_pb.ResolveModelResponse, model: str, task: str) -> ApiError:
    """The 404 for a model nobody can serve to this caller, with the Registry's reasons."""
    if not answer.model_found:
        return not_found("MODEL_NOT_FOUND", f"model {model[:200]} does not exist", "model")
    if answer.exclusions:
        reasons = "; ".join(f"{e.provider}: {e.reason}" for e in answer.exclusions)
        return not_found("MODEL_NOT_AVAILABLE", f"no provider serves {model} for you ({reasons})")
    return not_found("MODEL_NOT_AVAILABLE", f"no provider serves {model} for the task {task}")
