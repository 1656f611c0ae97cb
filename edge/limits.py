"""What the edge (Envoy) spends on a caller before it knows who they are, and how much of it
any one client may take: one set of limits for memory under held bodies and for isolation
from floods (docs/edge.md has every figure and why).

- Every route has a body cap (per-route buffer limit), from a table keyed by what the route's
  body is: no body, a typed JSON message, a free body (chat, images); a few typed routes known
  to carry large batches are listed. New routes get their kind's cap by default.
- A body larger than SMALL_BODY_BYTES (or of unknown length) is buffered only after the gate
  (envoy/gate.lua) saw a bearer token the Registry knows: a bad token is a 401 before the body is read.
- Bodies over BUDGETED_BODY_BYTES count against byte budgets (Envoy's local rate limit, one token
  per byte declared), one per client address, one per caller (API key, from any addresses) and one
  for all clients together: past any, the request is marked (OVER_BUDGET_HEADER), held for the
  refusal delay (Envoy's fault filter: a timer, no CPU) and then refused by the gate with a 429,
  its body unread. A client that sends again as soon as it is answered is so held to one refused
  request per connection per delay. The per-caller budget is the per-caller limit on the expensive
  routes: their cost grows with body bytes, and a key is who pays, wherever it calls from.
- A body must arrive within BODY_DEADLINE (a 408); the overload manager watches Envoy's heap
  and sheds load before the process is at risk; a global cap on downstream connections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.auth import TOKEN_PREFIXES

MIB = 1024 * 1024
SMALL_BODY_BYTES = 64 * 1024  # up to this, a body is buffered without asking who sent it
# Bodies over this count against the byte budgets: a client's parsing work grows with its bodies'
# size, and ordinary requests (a few KiB) stay free.
BUDGETED_BODY_BYTES = 16 * 1024
TYPED_BODY_BYTES = 2 * MIB  # a typed JSON body (partners, admin, billing), unless listed below
FREE_BODY_BYTES = 8 * MIB  # a free body (chat, images, ...): EnvoyPorts.max_request_bytes
# Typed routes whose bodies are large batches by design: up to the free-body cap.
LARGE_TYPED_ROUTES = frozenset(
    {
        "POST /admin/v1/models:batchUpsert",
        "PUT /admin/v1/providers/{provider_id}/prices",
    }
)
MAX_BUCKET = 2**32  # Envoy's token buckets count in 32 bits
GATE_FILTER = "switchboard.gate"  # the gate's Lua filter: its name is the key of its route metadata
REGISTRY_CLUSTER = "registry"
# Set by the budgets on a request past them (never by a caller: early_mutations removes it).
OVER_BUDGET_HEADER = "x-switchboard-over-budget"
GATE_TIMEOUT_MS = 2000  # the gate's token check; past it the request goes on and the service decides
BUDGET_MESSAGE = (
    "too many large request bodies from this client address or API key at once: retry after a second, "
    "or send smaller bodies"
)
# The caller's API key as dynamic metadata (caller_key_filter), the per-caller budget's descriptor.
CALLER_NAMESPACE = "switchboard.caller"
CALLER_KEY = "key"

HEAP_ENV = "SWITCHBOARD_ENVOY_MAX_HEAP_MB"
CONNECTIONS_ENV = "SWITCHBOARD_ENVOY_MAX_CONNECTIONS"
BODY_DEADLINE_ENV = "SWITCHBOARD_ENVOY_BODY_DEADLINE_SECONDS"
CLIENT_BUDGET_ENV = "SWITCHBOARD_ENVOY_CLIENT_LARGE_BODY_MIB"  # "burst,per_second"
EDGE_BUDGET_ENV = "SWITCHBOARD_ENVOY_LARGE_BODY_MIB"  # "burst,per_second", all clients together
CALLER_BUDGET_ENV = "SWITCHBOARD_ENVOY_CALLER_LARGE_BODY_MIB"  # "burst,per_second", per API key


@dataclass(frozen=True)
class EdgeLimits:
    """Envoy's limits; the defaults are documented in docs/edge.md."""

    max_heap_bytes: int = 1024 * MIB  # the overload manager's fixed heap
    max_connections: int = 10_000  # open downstream connections, all listeners together
    body_deadline_seconds: int = 30  # headers to last body byte (HCM request_timeout): a 408 after
    headers_deadline_seconds: int = 10  # first header byte to the last (HCM request_headers_timeout): a 408 after
    connection_idle_seconds: int = 120  # a keep-alive connection without a request is closed
    connection_buffer_bytes: int = 1 * MIB  # per connection, listener and clusters (Envoy's default, stated)
    client_burst_bytes: int = 24 * MIB  # large bodies one client address may start at once ...
    client_bytes_per_second: int = 2 * MIB  # ... and then per second
    edge_burst_bytes: int = 256 * MIB  # the same for all clients together: what many addresses may start
    edge_bytes_per_second: int = 16 * MIB
    # Large bodies one API key may start at once and then per second, from any number of addresses;
    # 0: half the all-clients budget's, so that no one caller takes all of it (caller_budget).
    caller_burst_bytes: int = 0
    caller_bytes_per_second: int = 0
    refusal_delay_ms: int = 1000  # a request past its budget is answered 429 this much later ...
    max_delayed_refusals: int = 128  # ... unless this many are already held (then at once)
    anonymous: bool = False  # anonymous mode: Router routes take large bodies without a token

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] = os.environ, anonymous: bool = False) -> EdgeLimits:
        """The defaults, with the SWITCHBOARD_ENVOY_* settings given."""
        limits = cls(anonymous=anonymous)
        values: dict[str, int] = {}
        if heap := environment.get(HEAP_ENV):
            values["max_heap_bytes"] = int(heap) * MIB
        if connections := environment.get(CONNECTIONS_ENV):
            values["max_connections"] = int(connections)
        if deadline := environment.get(BODY_DEADLINE_ENV):
            values["body_deadline_seconds"] = int(deadline)
        for env, prefix in ((CLIENT_BUDGET_ENV, "client"), (EDGE_BUDGET_ENV, "edge"), (CALLER_BUDGET_ENV, "caller")):
            if budget := environment.get(env):
                burst, _, rate = budget.partition(",")
                values[f"{prefix}_burst_bytes"], values[f"{prefix}_bytes_per_second"] = (
                    int(burst) * MIB,
                    int(rate) * MIB,
                )
        for name, value in values.items():
            if not 0 < value < MAX_BUCKET:
                raise ValueError(f"{name} must be positive and below {MAX_BUCKET}, got {value}")
        return EdgeLimits(**{**limits.__dict__, **values})

    def headers_deadline(self) -> int:
        """Seconds the request headers may take: never more than the whole request may."""
        return min(self.headers_deadline_seconds, self.body_deadline_seconds)

    def caller_budget(self) -> tuple[int, int]:
        """(burst, bytes per second) of one API key: as set, else half the all-clients budget."""
        return (
            self.caller_burst_bytes or self.edge_burst_bytes // 2,
            self.caller_bytes_per_second or self.edge_bytes_per_second // 2,
        )


def body_cap(key: str, body: str, free: bool) -> int:
    """A route's body cap from its kind: `body` is the rule's body ("" none), `free` a free body."""
    if not body:
        return SMALL_BODY_BYTES
    return FREE_BODY_BYTES if free or key in LARGE_TYPED_ROUTES else TYPED_BODY_BYTES


def route_limits(cap: int, *, anonymous: bool = False) -> tuple[dict, dict]:
    """(route metadata, typed_per_filter_config) that give a route its body cap: the buffer
    filter's limit, and the gate's (which refuses a declared larger body before reading it)."""
    gate = {"max_body": cap, "anonymous": anonymous}
    buffer = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
        "buffer": {"max_request_bytes": cap},
    }
    return {GATE_FILTER: gate}, {"envoy.filters.http.buffer": buffer}


def _heap(threshold: float) -> list[dict]:
    return [{"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": threshold}}]


def _heap_scaled(start: float, full: float) -> list[dict]:
    scaled = {"scaling_threshold": start, "saturation_threshold": full}
    return [{"name": "envoy.resource_monitors.fixed_heap", "scaled": scaled}]


def overload_manager(limits: EdgeLimits) -> dict:
    """The heap monitor and what Envoy does as its heap fills: at 80 % it returns free memory to
    the system and starts shortening idle timeouts (to a tenth at 95 %); from 85 % it resets the
    streams that hold the most buffered memory (all of them over 1 MiB at 95 %); at 90 % it stops
    keeping connections alive; at 95 % it refuses new requests (503) and new connections."""
    timers = [
        {"timer": timer, "min_scale": {"value": 10}}
        for timer in ("HTTP_DOWNSTREAM_CONNECTION_IDLE", "HTTP_DOWNSTREAM_STREAM_IDLE")
    ]
    fixed_heap = "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
    connections = (
        "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
    )
    return {
        "refresh_interval": "0.25s",
        # Streams buffering 1 MiB or more are tracked, so that the largest can be reset first.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.fixed_heap",
                "typed_config": {"@type": fixed_heap, "max_heap_size_bytes": limits.max_heap_bytes},
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {"@type": connections, "max_active_downstream_connections": limits.max_connections},
            },
        ],
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": _heap(0.80)},
            {
                "name": "envoy.overload_actions.reduce_timeouts",
                "triggers": _heap_scaled(0.80, 0.95),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                    "timer_scale_factors": timers,
                },
            },
            {"name": "envoy.overload_actions.reset_high_memory_stream", "triggers": _heap_scaled(0.85, 0.95)},
            {"name": "envoy.overload_actions.disable_http_keepalive", "triggers": _heap(0.90)},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": _heap(0.95)},
        ],
        "loadshed_points": [{"name": "envoy.load_shed_points.tcp_listener_accept", "triggers": _heap(0.95)}],
    }


# A body of unknown length (chunked, or HTTP/2 without content-length) counts as the largest.
_BODY_METHODS = r"POST|PUT|PATCH"


def _large_body(whose: list[dict], hits: dict, *length_match: dict) -> dict:
    """A rate limit entry: (*whose, "large") for requests whose headers match, costing `hits`; `whose`
    are the actions naming the budget's owner (none: all clients)."""
    not_grpc = {"name": "content-type", "string_match": {"prefix": "application/grpc"}, "invert_match": True}
    match = {
        "descriptor_key": "body",
        "descriptor_value": "large",
        "headers": [*length_match, not_grpc],
    }
    return {"actions": [*whose, {"header_value_match": match}], "hits_addend": hits}


def _bucket(burst: int, per_second: int) -> dict:
    return {"max_tokens": burst, "tokens_per_fill": max(1, per_second // 4), "fill_interval": "0.25s"}


def client_budget_filter(limits: EdgeLimits) -> dict:
    """Envoy's local rate limit as byte budgets for large bodies, one per client address, one per
    caller (API key: a caller with many addresses or connections is one caller; a request without a
    key has no caller budget) and one for all clients together: a body over BUDGETED_BODY_BYTES
    costs its declared length, one of unknown length the free-body cap. Native gRPC is not counted:
    its routes are not buffered (flow control holds a slow sender). The filter does not refuse: it
    marks a request past a budget, which the refusal delay holds and the gate refuses (a 429), so
    that a refusal costs a flood time, not us CPU."""
    declared_large = {"name": "content-length", "range_match": {"start": BUDGETED_BODY_BYTES + 1, "end": 2**62}}
    unknown_length = {"name": "content-length", "present_match": True, "invert_match": True}
    with_body = {"name": ":method", "string_match": {"safe_regex": {"regex": _BODY_METHODS}}}
    every = {"numerator": 100, "denominator": "HUNDRED"}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "client_large_bodies",
            # Requests without the descriptor (small bodies) are not limited here.
            "token_bucket": {"max_tokens": 2**31, "tokens_per_fill": 2**31, "fill_interval": "1s"},
            "filter_enabled": {"default_value": every},
            "filter_enforced": {"default_value": {"numerator": 0, "denominator": "HUNDRED"}},
            "request_headers_to_add_when_not_enforced": [
                {"header": {"key": OVER_BUDGET_HEADER, "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ],
            "max_dynamic_descriptors": limits.max_connections,
            "descriptors": [
                {
                    "entries": [{"key": "remote_address"}, {"key": "body", "value": "large"}],
                    "token_bucket": _bucket(limits.client_burst_bytes, limits.client_bytes_per_second),
                },
                {
                    "entries": [{"key": "caller"}, {"key": "body", "value": "large"}],
                    "token_bucket": _bucket(*limits.caller_budget()),
                },
                {
                    "entries": [{"key": "body", "value": "large"}],
                    "token_bucket": _bucket(limits.edge_burst_bytes, limits.edge_bytes_per_second),
                },
            ],
            "rate_limits": [
                _large_body(whose, hits, *match)
                for whose in ([{"remote_address": {}}], [_CALLER_ACTION], [])
                for hits, match in (
                    ({"format": "%REQ(content-length)%"}, [declared_large]),
                    ({"number": FREE_BODY_BYTES}, [unknown_length, with_body]),
                )
            ],
            "local_rate_limit_per_downstream_connection": False,
        },
    }


# The caller's key (caller_key_filter); a request without one produces no caller descriptor.
_CALLER_ACTION = {
    "metadata": {
        "descriptor_key": "caller",
        "metadata_key": {"key": CALLER_NAMESPACE, "path": [{"key": CALLER_KEY}]},
        "source": "DYNAMIC",
    }
}


def caller_key_filter() -> dict:
    """Envoy's header_to_metadata: the caller's API key as the gate reads it (the bearer token of
    Authorization, however its scheme is spelled, else x-api-key) as dynamic metadata, before the
    budgets; one key is one caller whichever header carries it."""

    def rule(header: str, rewrite: dict | None = None) -> dict:
        value = {"metadata_namespace": CALLER_NAMESPACE, "key": CALLER_KEY, "type": "STRING"}
        return {"header": header, "on_header_present": value | (rewrite or {}), "remove": False}

    bearer = {"pattern": {"regex": r"^[Bb][Ee][Aa][Rr][Ee][Rr] +(\S*)\s*$"}, "substitution": r"\1"}
    return {
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
            # The later rule wins: Authorization before x-api-key, as in the gate.
            "request_rules": [rule("x-api-key"), rule("authorization", {"regex_value_rewrite": bearer})],
        },
    }


def refusal_delay_filter(limits: EdgeLimits) -> dict:
    """Envoy's fault filter as the refusal delay: a request the budgets marked waits `refusal_delay_ms`
    (a timer; its body is not read past the connection's buffer) before the gate refuses it; at most
    `max_delayed_refusals` wait at once, the others are refused at once. The delay is at most half the
    body deadline, so that the 429 comes before the deadline's 408."""
    delay_ms = min(limits.refusal_delay_ms, limits.body_deadline_seconds * 1000 // 2)
    return {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {
                "fixed_delay": f"{delay_ms / 1000:g}s",
                "percentage": {"numerator": 100, "denominator": "HUNDRED"},
            },
            "headers": [{"name": OVER_BUDGET_HEADER, "present_match": True}],
            "max_active_faults": limits.max_delayed_refusals,
        },
    }


def over_budget_mapper() -> dict:
    """The local reply mapper of the gate's 429 past a budget: its body as the gate wrote it, and when to retry."""
    marked = {"filter": "switchboard", "path": [{"key": "over_budget"}], "value": {"bool_match": True}}
    over_budget = {"matcher": marked, "match_if_key_not_found": False}
    retry = {"header": {"key": "retry-after", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    return {"filter": {"metadata_filter": over_budget}, "headers_to_add": [retry]}


def _small_number_regex(limit: int) -> str:
    """An RE2 regex for the decimal numbers 0..limit, written without leading zeros."""
    digits = str(limit)
    alternatives = ["0"]
    if len(digits) > 1:  # fewer digits than the limit
        alternatives.append(f"[1-9][0-9]{{0,{len(digits) - 2}}}")
    for at, digit in enumerate(digits):  # as many: the limit's first digits, a smaller one, then any
        lowest = 1 if at == 0 else 0
        if int(digit) > lowest:
            alternatives.append(digits[:at] + f"[{lowest}-{int(digit) - 1}]" + "[0-9]" * (len(digits) - at - 1))
    return "(?:" + "|".join([*alternatives, digits]) + ")"


def _request_header(name: str, regex: str) -> dict:
    """A matcher predicate: the request header `name` is present and fully matches `regex`."""
    header = {"@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput", "header_name": name}
    value = {"safe_regex": {"google_re2": {}, "regex": regex}}
    return {"single_predicate": {"input": {"name": name, "typed_config": header}, "value_match": value}}


def gate_filter(gate_lua: str) -> dict:
    """The gate (envoy/gate.lua, with errors.lua's helpers): before the buffer filter. A request that
    declares a small body and was not marked by the budgets, which the gate lets on untouched, skips it
    (the hot path): a matcher in C++ instead of a Lua coroutine per request."""
    small = _request_header("content-length", _small_number_regex(SMALL_BODY_BYTES))
    unmarked = {"not_matcher": _request_header(OVER_BUDGET_HEADER, ".*")}
    skip = {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}
    matcher = {
        "predicate": {"and_matcher": {"predicate": [small, unmarked]}},
        "on_match": {"action": {"name": "skip", "typed_config": skip}},
    }
    lua = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": gate_lua},
    }
    return {
        "name": GATE_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {"name": GATE_FILTER, "typed_config": lua},
            "xds_matcher": {"matcher_list": {"matchers": [matcher]}},
        },
    }


def gate_tables() -> str:
    """The gate's constants, as Lua."""
    return (
        f"SMALL_BODY_BYTES = {SMALL_BODY_BYTES}\n"
        f"REGISTRY_CLUSTER = {REGISTRY_CLUSTER!r}\n"
        f"OVER_BUDGET_HEADER = {OVER_BUDGET_HEADER!r}\n"
        f"BUDGET_MESSAGE = {BUDGET_MESSAGE!r}\n"
        f"GATE_TIMEOUT_MS = {GATE_TIMEOUT_MS}\n"
        f"TOKEN_PREFIXES = {{{', '.join(repr(prefix) for prefix in TOKEN_PREFIXES)}}}\n"
    )
