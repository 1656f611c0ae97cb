"""Property tests of the Router's boundary: any JSON body is either accepted,
within the documented ranges, or refused with a 400 naming a parameter; and
every accepted body's estimate and ledger record fit in int64 (an overflow
there once lost the record of a served request)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.billing.v1 import billing_service_pb2 as billing_pb

from services.common import params
from services.common.errors import ApiError
from services.common.pricing import MAX_NANO_USD, Price, estimate_nano_usd, prompt_tokens_estimate

HUGE = st.integers(min_value=-(2**80), max_value=2**80)
JSON_SCALARS = st.none() | st.booleans() | HUGE | st.floats(allow_nan=False) | st.text(max_size=50)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
NAMES = sorted(set(params.CHAT) | set(params.IMAGES))
VALID_BASE = {"model": "org/m", "messages": [{"role": "user", "content": "hi"}], "prompt": "a cat"}
# Bodies around a valid one, so that both outcomes are common: random values for known and unknown names.
BODIES = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=10), JSON_VALUES | HUGE, max_size=4).map(
    lambda extra: {**VALID_BASE, **extra}
)
PRICES = st.builds(Price, *(st.integers(0, 2**63 - 1) for _ in range(4)))


def _checked(body: dict, rules: tuple[dict, set]) -> bool:
    try:
        params.check_body(body, *rules)
    except ApiError as error:
        assert error.http_status == 400 and error.param.split(".")[0] in (set(rules[0]) | rules[1])
        assert len(error.message) < 300
        return False
    return True


@settings(max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, price=PRICES, body_size=st.integers(0, 8 * 1024 * 1024))
def test_any_chat_body_is_accepted_in_range_or_refused_naming_the_parameter(body, price, body_size) -> None:
    if not _checked(body, (params.CHAT, params.REQUIRED_CHAT)):
        return
    for name in ("max_tokens", "max_completion_tokens", "n"):
        assert body.get(name) is None or 1 <= body[name] <= params.MAX_OUTPUT_TOKENS
    output = body.get("max_completion_tokens") or body.get("max_tokens") or 1024
    estimate = estimate_nano_usd(
        price, "conversational", input_tokens=prompt_tokens_estimate(body_size), output_tokens=output
    )
    assert 0 <= estimate <= MAX_NANO_USD
    billing_pb.LedgerRecord(request_id="r", input_tokens=prompt_tokens_estimate(body_size), output_tokens=output,
                            estimated_nano_usd=estimate)  # fmt: skip


@settings(max_examples=150, derandomize=True)
@given(body=BODIES, price=PRICES)
def test_any_images_body_is_accepted_in_range_or_refused_naming_the_parameter(body, price) -> None:
    if not _checked(body, (params.IMAGES, params.REQUIRED_IMAGES)):
        return
    images = body.get("n") or 1
    assert 1 <= images <= params.MAX_IMAGES
    assert 0 <= estimate_nano_usd(price, "text-to-image", images=images) <= MAX_NANO_USD


@pytest.mark.parametrize("value", [True, 1.0, "3", 0, params.MAX_OUTPUT_TOKENS + 1, 10**30])
def test_max_tokens_is_an_integer_in_its_documented_range(value) -> None:
    body = {"model": "m", "messages": [{}], "max_tokens": value}
    with pytest.raises(ApiError) as refused:
        params.check_body(body, params.CHAT, params.REQUIRED_CHAT)
    assert (refused.value.param, refused.value.code) == ("max_tokens", "invalid_parameter")


@pytest.mark.parametrize(
    ("param", "value"),
    [("response_format", "jpeg"), ("size", "99999999x99999999"), ("size", "-1x-1"), ("size", "axb"), ("size", 512)],
)
def test_image_formats_and_sizes_are_checked(param, value) -> None:
    with pytest.raises(ApiError) as refused:
        params.check_body({"model": "m", "prompt": "p", param: value}, params.IMAGES, params.REQUIRED_IMAGES)
    assert refused.value.param == param


@pytest.mark.parametrize("size", ["auto", "1024x1024", "1792x1024", "1x8192"])
def test_image_sizes_in_range_pass(size) -> None:
    params.check_body({"model": "m", "prompt": "p", "size": size}, params.IMAGES, params.REQUIRED_IMAGES)
