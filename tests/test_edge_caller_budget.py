"""The per-caller budget for large bodies (edge/limits.py): one API key's large bodies
count against one budget from any address, however its header is spelled, through the real
Envoy; another caller's budget, and the caller's small bodies, are untouched."""

from __future__ import annotations

import json

import pytest
from helpers.edge import CHAT, MIB, hcm_of, raw_exchange, rendered
from helpers.registry import create_user, unique

from edge import limits as edge

pytestmark = pytest.mark.slow

BODY_BYTES = 8 * MIB  # the chat route's cap; the callers' budget below holds one such body


@pytest.fixture(scope="module")
def caller_budget(make_stack):
    """A stack whose callers may each start 8 MiB of large bodies at once (then 1 MiB/s): a second
    8 MiB body waits 8 s for room. The per-address and all-clients budgets stay the tests' (ample)."""
    return make_stack(**{edge.CALLER_BUDGET_ENV: "8,1"})


@pytest.fixture
def callers(caller_budget) -> tuple[str, str]:
    """Two new callers, each with a full budget."""
    with caller_budget.admin() as admin:
        return create_user(admin, None, None)[1], create_user(admin, None, None)[1]


def large_chat(stack, credential: str, *, whole: bool = True, path: str = CHAT) -> tuple[int, dict]:
    """(status, error) of a request declaring BODY_BYTES for a model nobody serves (a 404 once it is
    read); `whole=False` sends only its start, for an answer expected before the body is read."""
    body = {"model": unique("no-such/model"), "max_tokens": 8, "messages": [{"role": "user", "content": ""}]}
    body["messages"][0]["content"] = "x" * (BODY_BYTES - len(json.dumps(body)))
    encoded = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: switchboard", "Content-Type: application/json", credential]
    head.append(f"Content-Length: {len(encoded)}")
    request_head = ("\r\n".join(head) + "\r\n\r\n").encode()
    status, _, answer = raw_exchange(stack, request_head, encoded if whole else encoded[:1000])
    return status, json.loads(answer)["error"]


def test_a_callers_second_large_body_is_refused_and_another_callers_is_not(caller_budget, callers) -> None:
    first, second = callers
    assert large_chat(caller_budget, f"Authorization: Bearer {first}")[0] == 404
    status, error = large_chat(caller_budget, f"Authorization: Bearer {first}", whole=False)
    assert status == 429
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert "API key" in error["message"]
    # The same address, another key: its own budget.
    assert large_chat(caller_budget, f"Authorization: Bearer {second}")[0] == 404


def test_one_key_is_one_caller_however_its_header_is_written(caller_budget, callers) -> None:
    first, _ = callers
    assert large_chat(caller_budget, f"Authorization: Bearer {first}")[0] == 404
    assert large_chat(caller_budget, f"Authorization: bEARER   {first}", whole=False)[0] == 429
    status, error = large_chat(caller_budget, f"x-api-key: {first}", whole=False, path="/v1/messages")
    assert (status, error["type"]) == (429, "rate_limit_error")  # in Anthropic's shape there
    # Another x-api-key beside it does not make a new caller: Authorization is the key, as in the gate.
    other = f"Authorization: Bearer {first}\r\nx-api-key: {unique('sb-other')}"
    assert large_chat(caller_budget, other, whole=False)[0] == 429


def test_a_caller_past_the_budget_keeps_its_small_bodies(caller_budget, callers) -> None:
    first, _ = callers
    assert large_chat(caller_budget, f"Authorization: Bearer {first}")[0] == 404
    assert large_chat(caller_budget, f"Authorization: Bearer {first}", whole=False)[0] == 429
    with caller_budget.http(first) as client:
        answer = client.post(
            CHAT, json={"model": unique("no-such/model"), "messages": [{"role": "user", "content": "hi"}]}
        )
    assert answer.status_code == 404


def test_the_caller_budget_is_half_the_all_clients_budget_unless_set() -> None:
    def caller_bucket(limits: edge.EdgeLimits) -> dict:
        hcm = hcm_of(rendered(edge=limits))
        names = [f["name"] for f in hcm["http_filters"]]
        assert names.index("envoy.filters.http.header_to_metadata") < names.index("envoy.filters.http.local_ratelimit")
        (budget,) = [
            f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.local_ratelimit"
        ]
        buckets = {tuple(e["key"] for e in d["entries"]): d["token_bucket"] for d in budget["descriptors"]}
        return buckets[("caller", "body")]

    default = caller_bucket(edge.EdgeLimits.from_environment({edge.EDGE_BUDGET_ENV: "128,8"}))
    assert (default["max_tokens"], default["tokens_per_fill"]) == (64 * MIB, MIB)  # 4 MiB/s, every 0.25 s
    assert edge.EdgeLimits().caller_budget() == (128 * MIB, 8 * MIB)
    chosen = caller_bucket(edge.EdgeLimits.from_environment({edge.CALLER_BUDGET_ENV: "32,4"}))
    assert (chosen["max_tokens"], chosen["tokens_per_fill"]) == (32 * MIB, MIB)
