"""envoy/answers.lua in LuaJIT, as Envoy runs it (lupa), without a stack: the Router's typed answer
metadata (protos/switchboard/router/v1/answer_metadata.proto) becomes Server-Timing and OpenAI's
x-ratelimit-* headers, its own names of the provider and the request id x-inference-provider and
x-request-id. The stack tests are tests/test_answer_metadata.py, tests/test_answer_names.py and the
REST header tests (tests/test_router.py, tests/test_key_limits_stack.py)."""

from __future__ import annotations

import base64
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lupa import luajit21
from switchboard.registry.v1 import admin_service_pb2 as admin_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1.answer_metadata_pb2 import AnswerTiming, RateLimits, RateLimitState

from edge.envoy import errors_lua
from services.common.providers import DEFAULT_REQUEST_ID_HEADER, PROVIDER_METADATA_KEY, ProviderEntry
from services.router.key_limits import RATE_LIMITS_KEY
from services.router.request_ids import REQUEST_ID_METADATA_KEY
from services.router.timing import TIMING_KEY

FAKE_HEADERS = """
return function(initial)
  local values = initial
  return {
    get = function(_, name) return values[name] end,
    remove = function(_, name) values[name] = nil end,
    replace = function(_, name, value) values[name] = value end,
  }, values
end
"""


@pytest.fixture(scope="module")
def lua():
    runtime = luajit21.LuaRuntime()
    runtime.execute(errors_lua())
    return runtime


def encoded(message, padded: bool = False) -> str:
    """A binary metadata value as gRPC sends it over HTTP/2: base64, unpadded."""
    text = base64.b64encode(message.SerializeToString()).decode()
    return text if padded else text.rstrip("=")


def openai_duration(millis: int) -> str:
    """OpenAI's reset form, written out: "250ms", "6s", "1m0s"."""
    if millis < 1000:
        return f"{millis}ms"
    seconds = math.ceil(millis / 1000)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def test_reset_times_take_openais_form(lua) -> None:
    assert [lua.globals().reset_duration(ms) for ms in (250, 6000, 60_000, 61_500)] == ["250ms", "6s", "1m0s", "1m2s"]


_MICROS = st.integers(0, 10**12)


@given(router=_MICROS, upstream=_MICROS, padded=st.booleans())
def test_any_timing_becomes_server_timing_in_milliseconds(lua, router: int, upstream: int, padded: bool) -> None:
    value = encoded(AnswerTiming(router_micros=router, upstream_micros=upstream), padded)
    expected = f"router;dur={router / 1000:.2f}, upstream;dur={upstream / 1000:.2f}"
    assert lua.globals().server_timing(value) == expected


_STATE = st.none() | st.builds(
    RateLimitState, limit=st.integers(1, 10**9), remaining=st.integers(0, 10**9), reset_millis=st.integers(0, 10**8)
)


@given(requests=_STATE, tokens=_STATE)
def test_any_rates_become_openais_headers_for_the_rates_the_key_has(lua, requests, tokens) -> None:
    rates = RateLimits(requests=requests, tokens=tokens)
    expected = []
    for kind, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            expected += [
                [f"x-ratelimit-limit-{kind}", str(state.limit)],
                [f"x-ratelimit-remaining-{kind}", str(state.remaining)],
                [f"x-ratelimit-reset-{kind}", openai_duration(state.reset_millis)],
            ]
    found = lua.globals().rate_limit_headers(encoded(rates))
    assert [list(pair.values()) for pair in found.values()] == expected


def test_a_rest_answer_gets_the_rest_headers_in_place_of_the_typed_metadata(lua) -> None:
    timing = encoded(AnswerTiming(router_micros=1234, upstream_micros=56_789))
    rates = encoded(RateLimits(requests=RateLimitState(limit=10, remaining=0, reset_millis=5500)))
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from({TIMING_KEY: timing, RATE_LIMITS_KEY: rates}))
    lua.globals().present_answer(headers)
    assert dict(values) == {
        "server-timing": "router;dur=1.23, upstream;dur=56.79",
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6s",
    }


@pytest.mark.parametrize("garbage", ["", "!!!!", base64.b64encode(b"\xff\xff\xff").decode()])
def test_metadata_that_does_not_decode_is_dropped_without_failing_the_answer(lua, garbage: str) -> None:
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from({TIMING_KEY: garbage, RATE_LIMITS_KEY: garbage}))
    lua.globals().present_answer(headers)
    assert TIMING_KEY not in dict(values) and RATE_LIMITS_KEY not in dict(values)
    assert not [name for name in dict(values) if name.startswith("x-ratelimit-")]


# Field 1 with the other wire type than its schema's: a varint where a message is due, bytes where a number is.
WRONG_TYPES = [b"\x08\x05", b"\x0a\x01x", b"\x0a\x02\x0a\x00", b"\x0a\x02\x12\x00\x1a\x01x"]


@pytest.mark.parametrize("wrong", WRONG_TYPES)
def test_fields_of_the_wrong_type_never_fail_the_answer(lua, wrong: bytes) -> None:
    value = base64.b64encode(wrong).decode().rstrip("=")
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from({TIMING_KEY: value, RATE_LIMITS_KEY: value}))
    lua.globals().present_answer(headers)
    written = dict(values)
    assert TIMING_KEY not in written and RATE_LIMITS_KEY not in written
    assert all(written[name][:1].isdigit() for name in written if name.startswith("x-ratelimit-"))


def test_the_routers_own_names_become_the_rest_headers(lua) -> None:
    own = {PROVIDER_METADATA_KEY: "p-1", REQUEST_ID_METADATA_KEY: "id-1", "inference-id": "theirs"}
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from(own))
    lua.globals().present_answer(headers)
    assert dict(values) == {"x-inference-provider": "p-1", "x-request-id": "id-1", "inference-id": "theirs"}


def test_a_providers_request_id_header_of_the_rest_name_follows_the_routers_value(lua) -> None:
    """As Envoy joined two values of one name before the edge presented it (one header, no space)."""
    own = {REQUEST_ID_METADATA_KEY: "id-1", "x-request-id": "theirs"}
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from(own))
    lua.globals().present_answer(headers)
    assert dict(values) == {"x-request-id": "id-1,theirs"}


def test_a_providers_request_id_header_of_the_provider_name_never_speaks_for_the_router(lua) -> None:
    own = {PROVIDER_METADATA_KEY: "p-1", "x-inference-provider": "someone-else"}
    headers, values = lua.execute(FAKE_HEADERS)(lua.table_from(own))
    lua.globals().present_answer(headers)
    assert dict(values) == {"x-inference-provider": "p-1"}


@pytest.mark.parametrize(
    "header",
    ["Switchboard-Provider", "switchboard-request-id", "Switchboard-Timing-Bin", "grpc-status", "Content-Type"],
)
def test_a_providers_request_id_header_never_takes_one_of_the_routers_own_names(header: str) -> None:
    provider = admin_pb.Provider(id="p", base_url="http://p", request_id_header=header)
    entry = ProviderEntry.from_config(internal_pb.ProviderConfig(provider=provider))
    assert entry.request_id_metadata_key == DEFAULT_REQUEST_ID_HEADER.lower()
    assert entry.request_id_header == header  # still read from the provider's answers by its name
