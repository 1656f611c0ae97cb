"""A refusal of the edge's own (the strict Lua checks', the transcoder's, a route's 404) to an HTTP/1.1
request whose body was read whole keeps the caller's connection, as the services' own errors do: Envoy
closes a connection on any local 400 unless told otherwise (envoy/envoy.yaml.template,
override_stream_error_on_invalid_http_message). Where HTTP needs it the connection still closes: a
refusal before the body was read (a declared body over the route's cap), a request Envoy cannot parse."""

from __future__ import annotations

import http.client

import pytest
from helpers.edge import CHAT, raw_exchange, request_head

pytestmark = pytest.mark.e2e

LIMIT = "/v1/billing/accounts/demo/limit"
# (method, path, body, status): each refused by the edge itself, its body (if any) read whole; a tuple
# of parts is sent chunked.
REFUSALS = [
    ("GET", "/v1/providers?page_size=abc", None, 400),  # strict.lua: an unknown query parameter
    ("PUT", LIMIT, b'{"bogus": 1}', 400),  # strict.lua: an unknown field in the body
    ("PUT", LIMIT, (b'{"bogus": 1}',), 400),  # the same, chunked: the gate asks the Registry, then it is read
    ("PUT", LIMIT, b"{}", 400),  # strict.lua: a missing required field
    ("PUT", LIMIT, b'{"limitNanoUsd": 1,', 400),  # the transcoder: JSON that does not parse
    ("PUT", LIMIT, b'{"limitNanoUsd": "many"}', 400),  # the transcoder: a value of the wrong type
    ("POST", CHAT + "?bogus=1", b'{"model": "m"}', 400),  # strict.lua on the hot path's route with a query
    ("POST", "/v1/messages?bogus=1", b'{"model": "m"}', 400),  # the same in Anthropic's shape
    ("GET", "/v1/providers/" + "a" * 5000, None, 414),  # strict.lua: a path over its cap
    ("GET", "/no/such/route", None, 404),  # a route's direct response
]


def test_refusals_of_requests_read_whole_keep_the_connection(stack) -> None:
    host, port = stack.address("envoy").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Content-Type": "application/json"}
    try:
        connection.connect()
        first_socket = connection.sock
        answered = []
        for method, path, body, _ in REFUSALS * 2:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            answered.append((answer.status, answer.getheader("connection"), connection.sock is first_socket))
        connection.request("GET", "/v1/billing/accounts/demo", headers=headers)
        answer = connection.getresponse()
        answer.read()
        answered.append((answer.status, answer.getheader("connection"), connection.sock is first_socket))
    finally:
        connection.close()
    expected = [(status, None, True) for _, _, _, status in REFUSALS * 2]
    assert answered == [*expected, (200, None, True)]


def test_a_refusal_before_the_body_was_read_closes_the_connection(stack) -> None:
    """A declared body over the route's cap is refused unread: the connection cannot be reused."""
    status, head, _ = raw_exchange(stack, request_head(LIMIT, 64 * 1024 * 1024, stack.admin_token, "PUT"))
    assert (status, "connection: close" in head) == (413, True)


def test_a_request_envoy_cannot_parse_closes_the_connection(stack) -> None:
    status, head, _ = raw_exchange(stack, b"GET /v1/providers HTTP/1.1\r\nHost: switchboard\r\nBad Header\r\n\r\n")
    assert (status, "connection: close" in head) == (400, True)
