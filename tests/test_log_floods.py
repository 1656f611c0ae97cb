"""Errors are not log floods (issue 24, finding 5): a request rejected for bad input is logged at
most once, without a traceback, by whichever service rejects it; repeats are rate-limited."""

from __future__ import annotations

import json

import pytest
from helpers.clients import http_client
from helpers.stacks import LogMarks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

# One route of each service, and one of each kind (inference, catalog, billing, admin, self-service).
ROUTES = [
    ("POST", "/v1/chat/completions", {"model": "x/y", "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/billing/usage?account=x", None),
    ("GET", "/admin/v1/providers", None),
    ("GET", "/admin/v1/providerHealth", None),
    ("GET", "/v1/me/tokens", None),
]
# Bad input of other kinds, each refused with a 4xx.
BAD_REQUESTS = [
    ("POST", "/v1/chat/completions", b"{not json"),
    ("POST", "/v1/chat/completions", b"[1, 2]"),
    ("POST", "/v1/chat/completions", b'{"model": "x/y", "messages": [], "max_tokens": 1e400}'),
    ("POST", "/v1/chat/completions", b'{"model": "\xff\xfe", "messages": []}'),
    ("GET", "/v1/models/%ff%fe", None),
    ("GET", "/v1/billing/usage?account=%ff&period=9999-99", None),
    ("PUT", "/v1/billing/accounts/x/limit", b'{"limitNanoUsd": "99999999999999999999999"}'),
    ("POST", "/admin/v1/orgs", rb'{"name": "\u0000"}'),
]


@pytest.fixture(scope="module")
def sb(quiet_stack):
    return quiet_stack


@pytest.fixture(scope="module")
def since(sb) -> LogMarks:
    """Where the logs ended before this module: what the modules sharing the stack logged is theirs to judge."""
    return sb.log_marks()


def bad_lines(sb, since: LogMarks) -> list[dict]:
    """Log entries at ERROR or above, and any with a traceback, logged since `since`."""
    entries = []
    for line in sb.logs(since).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entries.append({"raw": line}) if "Traceback" in line else None
            continue
        if isinstance(entry, dict) and (entry.get("level") in ("ERROR", "CRITICAL") or "exception" in entry):
            entries.append(entry)
    return entries


@settings(max_examples=8, derandomize=True, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(min_size=1, max_size=24))
def test_headers_that_are_not_utf8_are_refused_without_an_error_log(sb, since: LogMarks, raw: bytes) -> None:
    """Any bytes 0x80-0xff (mostly not UTF-8) after "Bearer ", on a route of every service, twice."""
    value = b"Bearer \xe9\xff" + bytes(0x80 | b for b in raw) + b"x"
    for method, path, body in ROUTES:
        with http_client(base_url=sb.base_url, timeout=30) as http:
            for _ in range(2):
                answer = http.request(method, path, json=body, headers={"Authorization": value})
                assert answer.status_code == 401, (path, answer.text)
    assert bad_lines(sb, since) == []
    for service in ("router", "registry", "billing"):  # once per minute at most: this run is shorter
        assert sb.log(service, since).count("not valid UTF-8") <= 1, service


def test_other_bad_input_is_refused_without_an_error_log(sb, since: LogMarks) -> None:
    with http_client(base_url=sb.base_url, timeout=30, headers={"Authorization": f"Bearer {sb.admin_token}"}) as http:
        for method, path, body in BAD_REQUESTS * 3:
            answer = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert 400 <= answer.status_code < 500, (path, body, answer.text)
    assert bad_lines(sb, since) == []
