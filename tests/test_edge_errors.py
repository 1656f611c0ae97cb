"""The edge owns presentation (issue 23): services end calls with a google.rpc.Status and know
nothing of REST; Envoy's Lua filter turns the status into OpenAI's (or Anthropic's) error shape
from one table generated from the error catalogue (gen/error_faces.lua)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from edge.envoy import ERROR_FACES_FILE, error_faces_lua
from services.common.errors import (
    ANTHROPIC_FACES,
    DETAILS_TRAILER,
    PROVIDER_CODE_KEY,
    ApiError,
    Code,
    from_rpc_error,
    rest_face,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
# Names only a REST answer or request has: they belong to Envoy's configuration (edge/, envoy/), never to
# a service. The services' own metadata names start with "switchboard-", never with "x-" (but the service
# credential's previous name, accepted for one release: services/common/auth.py).
REST_ONLY_NAMES = re.compile(
    r"x-switchboard-(?!service-credential\b)|x-ratelimit-|retry-after|server-timing|x-inference-provider|x-request-id|x-envoy-original-path",
    re.IGNORECASE,
)


def test_the_committed_error_table_is_what_the_catalogue_generates() -> None:
    assert ERROR_FACES_FILE.read_text() == error_faces_lua(), "stale: run python scripts/generate.py"


def test_the_error_table_names_every_face_of_the_catalogue() -> None:
    text = error_faces_lua()
    for code, reason in table():
        face = rest_face(code, reason)
        key = f'["{code.value[0]}:{reason}"]' if reason else f"[{code.value[0]}]"
        assert f'{key}={{{face.status},"{face.type}"}}' in text
    for status, (anthropic_status, kind) in ANTHROPIC_FACES.items():
        assert f'[{status}]={{{anthropic_status},"{kind}"}}' in text
    assert f'PROVIDER_CODE_KEY = "{PROVIDER_CODE_KEY}"' in text


def test_no_service_names_a_rest_only_header_or_trailer() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {match.group()}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        for match in REST_ONLY_NAMES.finditer(path.read_text())
    ]
    assert found == []


def test_retry_info_travels_in_the_status_and_is_relayed() -> None:
    error = ApiError(Code.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", "slow down", retry_seconds=7)
    trailers = error.trailing_metadata()
    status = status_pb2.Status.FromString(dict(trailers)[DETAILS_TRAILER])
    retry = error_details_pb2.RetryInfo()
    assert [detail.Unpack(retry) for detail in status.details].count(True) == 1
    assert retry.retry_delay.seconds == 7
    rpc = grpc.aio.AioRpcError(Code.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "x")
    relayed = from_rpc_error(rpc)
    assert relayed is not None and relayed.retry_seconds == 7


@pytest.mark.e2e
def test_a_message_with_quotes_and_non_ascii_text_reaches_rest_callers_as_the_service_said(stack) -> None:
    provider = 'nope"quoted\\back-é'
    with stack.http() as http:
        answer = http.get("/v1/providers/" + quote(provider, safe=""))
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("not_found_error", None)
    assert error["code"].endswith("not_found") and provider in error["message"]
    assert not [name for name in answer.headers if name.startswith(("grpc-", "x-switchboard-"))]


@pytest.mark.e2e  # starts a Python process (a fresh interpreter's imports)
def test_the_services_import_no_deploy_time_code() -> None:
    """The runtime path (the three services' servers) never loads what renders Envoy's configuration."""
    servers = "import services.router.server, services.registry.server, services.billing.server"
    deploy_time = ("edge", "edge.envoy", "edge.limits", "edge.openapi")
    check = f"{servers}; import sys; print(sorted(m for m in sys.modules if m in {deploy_time!r}))"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"
