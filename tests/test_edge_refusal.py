"""A request past its byte budget (edge/limits.py) is held for the refusal delay and then
refused by the gate, through the real Envoy: a 429 in the route's error shape with Retry-After,
its body unread; only the budgets can mark a request so (a caller's own mark is removed)."""

from __future__ import annotations

import json
import socket
from contextlib import ExitStack

import pytest
from helpers.edge import CHAT, MIB, hcm_of, raw_exchange, read_answer, rendered, request_head
from helpers.registry import create_user, error_of, unique

from edge import limits as edge

pytestmark = pytest.mark.slow

MESSAGES = "/v1/messages"


@pytest.fixture(scope="module")
def small_budget(make_stack):
    """A stack whose clients may start 1 MiB of large bodies at once (then 1 MiB/s)."""
    return make_stack(**{edge.CLIENT_BUDGET_ENV: "1,1"})


@pytest.fixture(scope="module")
def caller(small_budget) -> str:
    with small_budget.admin() as admin:
        return create_user(admin, None, None)[1]


@pytest.mark.parametrize(("path", "shape"), [(CHAT, "openai"), (MESSAGES, "anthropic")])
def test_a_body_past_the_budget_is_a_429_with_retry_after(small_budget, caller: str, path: str, shape: str) -> None:
    status, head, body = raw_exchange(small_budget, request_head(path, 2 * MIB, caller), b"x" * 1000)
    assert status == 429
    assert "\r\nretry-after: 1" in head
    answer = json.loads(body)
    if shape == "anthropic":
        assert answer["type"] == "error"
        assert answer["error"]["type"] == "rate_limit_error"
    else:
        assert (answer["error"]["type"], answer["error"]["code"]) == ("rate_limit_error", "rate_limited")
    assert "large request bodies" in answer["error"]["message"]


def test_bodies_the_gate_skips_when_unmarked_are_refused_once_the_budget_marks_them(small_budget, caller: str) -> None:
    """A body between the budgeted size and the gate matcher's (16-64 KiB) skips the gate only while
    the budgets have not marked it: many at once, past the 1 MiB burst, get the budget's 429."""
    length = 60_000
    request = request_head(CHAT, length, caller) + b"x" * length
    # All sent before any answer is read: the budget refills 1 MiB a second, so bodies sent one after
    # another's answer on a busy machine could all fit (none was refused under load).
    host, port = small_budget.address("envoy").split(":")
    with ExitStack() as opened:
        sockets = [opened.enter_context(socket.create_connection((host, int(port)), timeout=60)) for _ in range(64)]
        for sock in sockets:
            sock.sendall(request)
        answers = [read_answer(sock) for sock in sockets]
    refused = [body for status, _, body in answers if status == 429]
    assert refused and all("large request bodies" in json.loads(body)["error"]["message"] for body in refused)
    assert {status for status, _, _ in answers} <= {400, 429}


def test_a_callers_own_over_budget_mark_is_removed(small_budget, caller: str) -> None:
    body = {"model": unique("no-such/model"), "messages": [{"role": "user", "content": "hi"}]}
    with small_budget.http(caller) as client:
        answer = client.post(CHAT, json=body, headers={edge.OVER_BUDGET_HEADER: "1"})
    assert error_of(answer, 404)["code"] == "model_not_found"  # the Router's answer, not the budget's


def test_the_refusal_delay_follows_the_limits() -> None:
    limits = edge.EdgeLimits(refusal_delay_ms=250, max_delayed_refusals=7)
    hcm = hcm_of(rendered(edge=limits))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("envoy.filters.http.local_ratelimit") < names.index("envoy.filters.http.fault")
    assert names.index("envoy.filters.http.fault") < names.index(edge.GATE_FILTER)
    (fault,) = [f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.fault"]
    assert fault["delay"]["fixed_delay"] == "0.25s"
    assert fault["max_active_faults"] == 7
    short = hcm_of(rendered(edge=edge.EdgeLimits(body_deadline_seconds=1)))["http_filters"]
    (fault,) = [f["typed_config"] for f in short if f["name"] == "envoy.filters.http.fault"]
    assert fault["delay"]["fixed_delay"] == "0.5s"  # half the body deadline: the 429 comes before the 408
    assert fault["headers"] == [{"name": edge.OVER_BUDGET_HEADER, "present_match": True}]
