"""Envoy's own replies, the ones no Lua check made (a route's 404, the transcoder's 400; the protocol
errors' 426, 431 and 408 and an unreachable service's 503 in tests/test_envoy_boundary.py), carry
Server-Timing's `edge` entry as the Lua refusals do (issue 22: Server-Timing on every answer):
errors.lua's response path writes it on any REST answer that came from no service. Answers that
came from a service keep what it sent. Every error of Envoy's own is in OpenAI's shape, one that no
mapper names too (edge/envoy.py, local_reply_mappers)."""

from __future__ import annotations

import json
import re

import pytest
from helpers.edge import raw_exchange, request_head

pytestmark = pytest.mark.e2e

EDGE_TIMING = re.compile(r"edge;dur=\d+\.\d\d")


def server_timings(head: str) -> list[str]:
    return [line.partition(":")[2].strip() for line in head.split("\r\n") if line.startswith("server-timing:")]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/no/such/route", b"", 404),  # the fallback route's direct response
        ("GET", "/v1/chat/completions", b"", 404),  # a REST path with another method
        ("PUT", "/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": 1,', 400),  # the transcoder's JSON parse
        ("PUT", "/v1/billing/accounts/demo/limit", b'{"limitNanoUsd": "many"}', 400),  # and its type check
    ],
)
def test_envoys_own_replies_carry_the_edges_timing(stack, method: str, path: str, body: bytes, status: int) -> None:
    answered, head, _ = raw_exchange(stack, request_head(path, len(body), stack.admin_token, method) + body)
    assert answered == status
    assert [EDGE_TIMING.fullmatch(value) is not None for value in server_timings(head)] == [True]


def test_an_answer_from_a_service_gets_no_edge_entry(stack) -> None:
    answered, head, _ = raw_exchange(stack, request_head("/v1/billing/accounts/demo", 0, stack.admin_token, "GET"))
    assert answered == 200
    assert not [value for value in server_timings(head) if "edge;" in value]


def error_of(head: str, body: bytes) -> dict:
    """The OpenAI error object of an answer, which must be JSON."""
    assert "content-type: application/json" in head.split("\r\n")
    return json.loads(body)["error"]


@pytest.mark.parametrize(
    ("path", "encoding"),
    [("/v1/chat/completions", "gzip"), ("/v1/models", "gzip, chunked"), ("/no/such/route", "identity")],
)
def test_a_transfer_encoding_other_than_chunked_is_a_400_in_openais_shape(stack, path: str, encoding: str) -> None:
    """Envoy's HTTP/1 codec answers it with a plain-text 501 before the request's headers are known: a bad
    request, not a failure of Switchboard's."""
    head = request_head(path, None, stack.admin_token).replace(b"chunked", encoding.encode())
    status, answer_head, body = raw_exchange(stack, head + b"0\r\n\r\n")
    error = error_of(answer_head, body)
    assert (status, error["type"], error["code"]) == (400, "invalid_request_error", "unsupported_transfer_encoding")
    assert "Transfer-Encoding" in error["message"]


def test_any_other_reply_of_envoys_own_is_in_openais_shape(stack) -> None:
    """A reply no mapper names (here the 403 of an upgrade no route accepts) still takes OpenAI's shape."""
    head = b"GET /v1/models HTTP/1.1\r\nHost: switchboard\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    status, answer_head, body = raw_exchange(stack, head)
    error = error_of(answer_head, body)
    assert (status, error["type"], error["code"]) == (403, "invalid_request_error", "invalid_request")
