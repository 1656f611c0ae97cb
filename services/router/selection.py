"""Provider selection: the `provider` field (a string or OpenRouter's provider object), policy
suffixes, what a request needs of a provider model (capabilities, context, price ceiling) and
candidate order. docs/provider-selection.md states the rules.

Pure functions over the Registry's candidates, the provider table and the
Router's measurements, so the rules can be tested without a network.

Capability rule: a request with `tools` (non-empty) skips provider models whose mapping says
`supports_tools: false`, one with a `json_schema` `response_format` those saying
`supports_structured_output: false`. Unknown support (never declared nor observed) keeps a
candidate eligible, after those known to support what the request needs, unless the provider
object says `require_parameters: true` (then unknown counts as unsupported). A known
`context_length` smaller than the prompt's estimate (the request body's bytes / 4, the
estimate reservations use) skips the candidate; an unknown one never does. Under a
`max_price` ceiling, a provider model over it, or without a price, is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.errors import ApiError, Code, invalid_argument, not_found
from services.common.pricing import NANO_PER_USD, Price, estimate_nano_usd
from services.common.providers import ProviderEntry, Route

POLICIES = ("fastest", "cheapest", "preferred")
SHOWN_UNKNOWN = 5  # unknown provider ids an error names
DEFAULT_POLICY = "fastest"
# The usage a :cheapest comparison prices (a typical short chat turn, or one image).
TYPICAL_INPUT_TOKENS = 500
TYPICAL_OUTPUT_TOKENS = 200


# The provider object's `sort` as the policy it stands for.
SORT_POLICIES = {"price": "cheapest", "throughput": "fastest", "latency": "latency"}
# The provider object's max_price parts under the names the top-level max_price uses.
OBJECT_PRICE_PARTS = {"prompt": "input", "completion": "output", "request": "request", "image": "image"}
ROUTING_FIELDS = ("order", "only", "ignore", "sort")  # what a per-provider route cannot honour


@dataclass(frozen=True)
class Selection:
    """What the caller asked for: a hub model id; providers to use alone in that order (the
    string form or a `:provider` suffix) or a policy; the provider object's filters."""

    model: str
    providers: tuple[str, ...] = ()
    policy: str = DEFAULT_POLICY
    order: tuple[str, ...] = ()  # tried first, in this order; the others after unless no fallbacks
    only: tuple[str, ...] = ()  # when given, no other provider
    ignore: tuple[str, ...] = ()
    allow_fallbacks: bool = True


def conflict(first: str, second: str, why: str) -> ApiError:
    """The 400 for two forms of provider selection that contradict each other."""
    return invalid_argument("CONFLICTING_PROVIDER_SELECTION", f"{first} conflicts with {second}: {why}", "provider")


def mentioned(value: object) -> list[str]:
    """Every provider id the `provider` field names (string or object)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, dict):
        return [i for key in ("order", "only", "ignore") for i in value.get(key) or ()]
    return []


def check_path_provider(value: object, provider: str) -> None:
    """A per-provider route names its provider: a provider object that routes is a 400."""
    if isinstance(value, dict):
        for key in ROUTING_FIELDS:
            if value.get(key) is not None:
                raise conflict(
                    f"the route's provider {provider[:96]}", f"provider.{key}", "the route picks the provider"
                )


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


def split_model(model: str) -> tuple[str, str]:
    """The hub model id and its policy or provider suffix ("" when none)."""
    base, colon, suffix = model.rpartition(":")
    return (base, suffix) if colon and base and suffix else (model, "")


def named_providers(model: str, provider_field: object) -> list[str]:
    """Every provider id a request names: its model's provider suffix and its `provider` field."""
    suffix = split_model(model)[1]
    return [*([suffix] if suffix and suffix not in POLICIES else []), *mentioned(provider_field)]


def parse_model(model: str, provider_field: object, known: dict[str, ProviderEntry]) -> Selection:
    """Splits a policy or provider suffix off a hub model id (no model id has a colon: any other
    suffix is an unknown provider, a 400); the `provider` string wins over a suffix, a provider
    object that contradicts it is a 400 naming both."""
    base, suffix = split_model(model)
    if suffix and suffix not in POLICIES:
        _check_known((suffix,), known, "model")
    if isinstance(provider_field, dict):
        return _with_object(base, suffix, provider_field, known)
    providers = parse_providers(provider_field, known)
    if suffix in POLICIES:
        return Selection(base, providers, suffix)
    return Selection(base, providers or ((suffix,) if suffix else ()))


def _ids(preferences: dict, key: str, known: dict[str, ProviderEntry]) -> tuple[str, ...]:
    ids = tuple(dict.fromkeys(preferences.get(key) or ()))
    _check_known(ids, known, f"provider.{key}")
    return ids


def _with_object(model: str, suffix: str, preferences: dict, known: dict[str, ProviderEntry]) -> Selection:
    """A Selection from a provider object (params.py checked its types), after its conflicts."""
    order, only, ignore = (_ids(preferences, key, known) for key in ("order", "only", "ignore"))
    for name, ids in (("order", order), ("only", only)):
        if both := [i for i in ids if i in ignore]:
            raise conflict(f"provider.{name}", "provider.ignore", f"{', '.join(both[:SHOWN_UNKNOWN])} in both")
    if only and (outside := [i for i in order if i not in only]):
        raise conflict("provider.order", "provider.only", f"{', '.join(outside[:SHOWN_UNKNOWN])} not in only")
    sort = preferences.get("sort")
    policy = SORT_POLICIES[sort] if sort else DEFAULT_POLICY
    providers: tuple[str, ...] = ()
    if suffix in POLICIES:
        if sort:
            raise conflict(f"the model suffix :{suffix}", "provider.sort", "give one order")
        policy = suffix
    elif suffix:
        for key, ids in (("order", order), ("only", only), ("ignore", ignore if suffix in ignore else ())):
            if ids:
                raise conflict(f"the model suffix :{suffix}", f"provider.{key}", "the suffix picks the provider")
        providers = (suffix,)
    fallbacks = preferences.get("allow_fallbacks") is not False
    return Selection(model, providers, policy, order, only, ignore, fallbacks)


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
            routes.append(Route(provider, adapter.base_provider_model or candidate.provider_model, path, candidate))
        else:
            routes.append(Route(provider, candidate.provider_model, candidate=candidate))
    return routes


def pick_requested(
    routes: list[Route], requested: tuple[str, ...], exclusions: Sequence[internal_pb.Exclusion], model: str
) -> list[Route]:
    """The routes of the requested providers, in the caller's order; 404 naming each requested
    provider with why it is left out (`considered_exclusions`) when none serves it."""
    by_provider: dict[str, list[Route]] = {}
    for route in routes:
        by_provider.setdefault(route.provider.id, []).append(route)
    chosen = [route for provider in requested for route in by_provider.get(provider, [])]
    if not chosen:
        summary, metadata = _listing(_by_status(exclusions))
        message = f"no requested provider serves {model[:200]} ({summary})"
        raise ApiError(Code.NOT_FOUND, "MODEL_NOT_AVAILABLE", message, metadata=metadata)
    return chosen


def order_routes(
    routes: list[Route],
    policy: str,
    task: str,
    measured: Callable[[str, str], tuple[float, float] | None],
    preferred: Sequence[str] = (),
) -> list[Route]:
    """Routes in the policy's order; ties (and unmeasured providers) by the operator's default rank."""
    if len(routes) < 2:  # nothing to order (a new list, as sorted's)
        return list(routes)
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
    if policy == "latency":

        def latency(route: Route) -> tuple:
            stats = measured(route.provider.id, route.provider_model)
            return (1, 0.0, *default(route)) if stats is None else (0, stats[1], *default(route))

        return sorted(routes, key=latency)
    if policy == "preferred" and preferred:
        rank = {provider: i for i, provider in enumerate(preferred)}
        return sorted(routes, key=lambda r: (rank.get(r.provider.id, len(rank)), *fastest(r)))
    return sorted(routes, key=fastest)


def explain_no_candidate(answer: internal_pb.ResolveModelResponse, model: str, task: str) -> ApiError:
    """The 404 for a model nobody can serve to this caller, with the Registry's reasons."""
    if not answer.model_found:
        return not_found("MODEL_NOT_FOUND", f"model {model[:200]} does not exist", "model")
    if answer.exclusions:
        summary, metadata = _listing(_by_status(answer.exclusions))
        message = f"no provider serves {model[:200]} for you ({summary})"
        return ApiError(Code.NOT_FOUND, "MODEL_NOT_AVAILABLE", message, metadata=metadata)
    return not_found("MODEL_NOT_AVAILABLE", f"no provider serves {model} for the task {task}")


# --- what a request needs of a provider model --------------------------------------------------

# Why a provider was left out, as ErrorInfo metadata names it (a Registry exclusion by its
# mapping's status, e.g. "staging" or "error", or NOT_SERVED when it has no mapping).
NO_TOOLS = "no_tools"
NO_STRUCTURED_OUTPUT = "no_structured_output"
CONTEXT_TOO_SHORT = "context_too_short"
OVER_PRICE_CEILING = "over_price_ceiling"
BREAKER_OPEN = "breaker_open"
NOT_SERVED = "not_served"
IGNORED = "ignored"  # named in provider.ignore
NO_FALLBACKS = "no_fallbacks"  # not the first fitting provider, under allow_fallbacks: false
# ErrorInfo metadata key of a left-out provider: this prefix and its id (never a key of errors.py).
EXCLUDED_KEY_PREFIX = "excluded_"
TOKENS_PER_PRICE_UNIT = 1_000_000  # max_price's token prices are USD per million tokens

Reason = tuple[str, str]  # (code, words)


@dataclass(frozen=True)
class PriceCeiling:
    """The caller's `max_price` (params.py checked it): USD per million input and output tokens,
    per request, per image; None puts no ceiling on that part."""

    input: float | None = None
    output: float | None = None
    request: float | None = None
    image: float | None = None

    def passed_by(self, price: Price | None) -> str:
        """Why the price passes the ceiling, in words; "" when it stays within it."""
        if price is None or not price.is_set:
            return "no price known to hold to max_price"
        parts = (
            ("input", self.input, price.input_token_nano_usd, "per million tokens", TOKENS_PER_PRICE_UNIT),
            ("output", self.output, price.output_token_nano_usd, "per million tokens", TOKENS_PER_PRICE_UNIT),
            ("request", self.request, price.request_nano_usd, "per request", 1),
            ("image", self.image, price.image_nano_usd, "per image", 1),
        )
        over = [
            f"{name} {nano * units / NANO_PER_USD:g} > {ceiling:g} USD {unit}"
            for name, ceiling, nano, unit, units in parts
            # the ceiling in whole nano-USD: 1.001 * 1e9 is 1000999999.9999999 in floats, under a price of 1.001
            if ceiling is not None and nano * units > round(ceiling * NANO_PER_USD)
        ]
        return "price over max_price: " + ", ".join(over) if over else ""


@dataclass(frozen=True)
class Needs:
    """What a request needs of a provider model."""

    tools: bool = False
    structured_output: bool = False
    prompt_tokens: int = 0  # the estimate a context length is held against
    ceiling: PriceCeiling | None = None
    require_parameters: bool = False  # unknown support counts as none

    def capabilities(self) -> list[tuple[str, str, str, str]]:
        """CAPABILITY_NEEDS' entries of the capabilities the request needs."""
        if not (self.tools or self.structured_output):  # the usual request
            return []
        return [
            need for need, wanted in zip(CAPABILITY_NEEDS, (self.tools, self.structured_output), strict=True) if wanted
        ]


# The capabilities a request may need: the candidate's field, the reason code, and in words
# its known lack and its unknown support.
CAPABILITY_NEEDS = (
    ("supports_tools", NO_TOOLS, "no tool support", "tool support not declared"),
    (
        "supports_structured_output",
        NO_STRUCTURED_OUTPUT,
        "no structured output",
        "structured output support not declared",
    ),
)


def needs_of(payload: dict, prompt_tokens: int, max_price: dict | None) -> Needs:
    """A checked body's needs: non-empty `tools`, a `json_schema` `response_format`, the prompt,
    the price ceiling (`max_price` or the provider object's, not both) and `require_parameters`."""
    response_format = payload.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") == "json_schema"
    preferences = payload.get("provider") if isinstance(payload.get("provider"), dict) else {}
    object_price = preferences.get("max_price")
    if object_price is not None:
        if max_price is not None:
            raise conflict("max_price", "provider.max_price", "give one price ceiling")
        max_price = {OBJECT_PRICE_PARTS[part]: amount for part, amount in object_price.items()}
    ceiling = PriceCeiling(**max_price) if max_price is not None else None
    strict = preferences.get("require_parameters") is True
    return Needs(bool(payload.get("tools")), structured, prompt_tokens, ceiling, strict)


def unknown_support(route: Route, needs: Needs) -> int:
    """How many of the capabilities the request needs the route's provider model may lack (unknown)."""
    return sum(not route.candidate.HasField(need[0]) for need in needs.capabilities())


def misfits(route: Route, needs: Needs) -> list[Reason]:
    """Every way the route's provider model fails the request's needs (none: it fits)."""
    candidate, found = route.candidate, []
    for name, code, lacking, unknown in needs.capabilities():
        if not candidate.HasField(name):
            if needs.require_parameters:
                found.append((code, f"{unknown} (provider.require_parameters)"))
        elif not getattr(candidate, name):
            found.append((code, lacking))
    if candidate.HasField("context_length") and needs.prompt_tokens > candidate.context_length:
        words = f"context of {candidate.context_length} tokens, prompt of about {needs.prompt_tokens}"
        found.append((CONTEXT_TOO_SHORT, words))
    if needs.ceiling is not None:
        over = needs.ceiling.passed_by(route.provider.prices.get(route.provider_model))
        if over:
            found.append((OVER_PRICE_CEILING, over))
    return found


def considered_exclusions(
    exclusions: Sequence[internal_pb.Exclusion], requested: Sequence[str], routes: Sequence[Route]
) -> list[internal_pb.Exclusion]:
    """The Registry's exclusions among the providers the caller named (all when none named), and
    each named provider that neither serves the model nor was excluded."""
    if not requested:
        return list(exclusions)
    named = [e for e in exclusions if e.provider in requested]
    accounted = {e.provider for e in named} | {r.provider.id for r in routes}
    missing = [p for p in requested if p not in accounted]
    return named + [internal_pb.Exclusion(provider=p, reason="no mapping for this model") for p in missing]


@dataclass(frozen=True)
class Fit:
    """The routes that fit a request, and every provider considered but left out, with its reasons."""

    routes: list[Route]
    left_out: dict[str, list[Reason]] = field(default_factory=dict)


def fitting(
    routes: list[Route],
    needs: Needs,
    exclusions: Sequence[internal_pb.Exclusion],
    model: str,
    breaker_open: Callable[[str], bool],
) -> Fit:
    """The routes whose provider model fits the request, and the providers left out: one left out
    by its mapping's status with that status only, one whose model fails the request with every
    failure (and its open breaker, if so). When routes exist but none fits, the 400 listing them."""
    kept, left_out = [], _by_status(exclusions)
    for route in routes:
        reasons = misfits(route, needs)
        if not reasons:
            kept.append(route)
            continue
        opened = [(BREAKER_OPEN, "failing recently (circuit open)")] if breaker_open(route.provider.id) else []
        left_out[route.provider.id] = reasons + opened
    if routes and not kept:
        summary, metadata = _listing(left_out)
        message = f"no provider fits this request for {model[:200]} ({summary})"
        raise ApiError(Code.INVALID_ARGUMENT, "NO_PROVIDER_FITS", message, metadata=metadata)
    return Fit(kept, left_out)


def plan(
    routes: list[Route],
    chosen: Selection,
    exclusions: Sequence[internal_pb.Exclusion],
    needs: Needs,
    task: str,
    measured: Callable[[str, str], tuple[float, float] | None],
    preferred: Sequence[str],
    breaker_open: Callable[[str], bool],
) -> Fit:
    """The routes to try, in order, and every provider left out with why: the named providers
    alone (string form, suffix or `only`), less `ignore`; those that fit the request; in the
    caller's order, else `order` first then the policy's; candidates known to support what the
    request needs before those whose support is unknown; the first alone without fallbacks."""
    named = chosen.providers or chosen.only
    if named:
        exclusions = considered_exclusions(exclusions, named, routes)
        routes = pick_requested(routes, named, exclusions, chosen.model)
    if chosen.ignore:
        ignored = dict.fromkeys(r.provider.id for r in routes if r.provider.id in chosen.ignore)
        exclusions = [e for e in exclusions if e.provider not in chosen.ignore] + [
            internal_pb.Exclusion(provider=p, reason="ignored (provider.ignore)", status=IGNORED) for p in ignored
        ]
        routes = [r for r in routes if r.provider.id not in ignored]
        if not routes:
            summary, metadata = _listing(_by_status(exclusions))
            message = f"no provider serves {chosen.model[:200]} for you ({summary})"
            raise ApiError(Code.NOT_FOUND, "MODEL_NOT_AVAILABLE", message, metadata=metadata)
    fit = fitting(routes, needs, exclusions, chosen.model, breaker_open)
    ordered = fit.routes
    if not chosen.providers:
        ordered = order_routes(ordered, chosen.policy, task, measured, preferred)
        if chosen.order:
            rank = {provider: i for i, provider in enumerate(chosen.order)}
            ordered.sort(key=lambda r: rank.get(r.provider.id, len(rank)))
    if needs.tools or needs.structured_output:
        ordered.sort(key=lambda r: unknown_support(r, needs))
    if chosen.allow_fallbacks or len(ordered) < 2:
        return Fit(ordered, fit.left_out)
    reason = (NO_FALLBACKS, "not the first fitting provider (provider.allow_fallbacks false)")
    dropped = {r.provider.id: [reason] for r in ordered[1:] if r.provider.id != ordered[0].provider.id}
    return Fit(ordered[:1], {**fit.left_out, **dropped})


def with_left_out(error: ApiError, left_out: dict[str, list[Reason]]) -> ApiError:
    """A failure of every route tried, completed with the providers left out before trying."""
    if not left_out:
        return error
    summary, metadata = _listing(left_out)
    return ApiError(
        error.grpc_code,
        error.reason,
        f"{error.message}; left out: {summary}",
        param=error.param,
        metadata={**error.metadata, **metadata},
        headers=error.headers,
    )


def _status_words(exclusion: internal_pb.Exclusion) -> str:
    """Staging in short; any other status (e.g. "error", with the probes' last failure) in the
    Registry's words."""
    if exclusion.status == "staging":
        return "staging only (for members of its org)"
    return exclusion.reason


def _by_status(exclusions: Sequence[internal_pb.Exclusion]) -> dict[str, list[Reason]]:
    if not exclusions:  # the usual resolution (a new dict all the same: callers add to it)
        return {}
    return {e.provider: [(e.status or NOT_SERVED, _status_words(e))] for e in exclusions}


def _listing(listed: dict[str, list[Reason]]) -> tuple[str, dict[str, str]]:
    """Each provider once with its reasons: in words for the message, as codes for ErrorInfo's metadata."""
    summary = "; ".join(f"{p}: {', '.join(words for _, words in reasons)}" for p, reasons in listed.items())
    metadata = {EXCLUDED_KEY_PREFIX + p: ",".join(code for code, _ in reasons) for p, reasons in listed.items()}
    return summary, metadata
