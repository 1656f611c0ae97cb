"""The conformance check through real Envoy: the reference provider passes every check, each
of its switches makes exactly its check fail with a clear reason, and only write members of
the provider's org (or the admin token) may run it or read the report."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2
from helpers.registry import ALL_SECRETS, assert_no_secret, error_of, ok
from hypothesis import given
from hypothesis import strategies as st
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

from services.cli import main
from services.common.errors import ApiError
from services.demo import AdminApi, reference_provider_argv, reference_provider_secrets
from services.launcher import Stack, free_port, http_ok
from services.registry.api.partners import json_time
from services.registry.domain.conformance import Checker, HttpClient
from services.registry.domain.task_checks import CHECKED_TASKS
from services.registry.storage.index import Mapping

PROVIDER_KEY = "ref-key-" + uuid.uuid4().hex
BILLING_TOKEN = "ref-billing-" + uuid.uuid4().hex
CHAT_CHECKS = ["chat", "chat_stream", "tools", "response_format"]
IMAGE_CHECKS = ["images_url", "images_b64_json"]
ORDER = [*CHAT_CHECKS, *IMAGE_CHECKS, "error_shape", "task", "request_id", "cost_api", "latency"]


@dataclass
class World:
    """A reference provider process, an org with a writer, a reader and an outsider, two models."""

    stack: object
    api: AdminApi
    provider_url: str
    org: str
    tokens: dict[str, str]
    chat_model: str
    image_model: str

    def provider(self, knobs: str = "", tasks: tuple[str, ...] = ("conversational", "text-to-image")) -> str:
        """A provider at the reference provider's URL, under /knobs/<knobs>/ when given."""
        provider_id = f"p-{uuid.uuid4().hex[:8]}"
        base = f"{self.provider_url}/knobs/{knobs}" if knobs else self.provider_url
        self.api.ensure_provider(
            {
                "id": provider_id,
                "org": self.org,
                "baseUrl": base,
                "apiKey": PROVIDER_KEY,
                "tasks": list(tasks),
                "billingUrl": f"{base}/v1/billing/costs",
                "billingAuthorization": f"Bearer {BILLING_TOKEN}",
            }
        )
        return provider_id

    def http(self, who: str = "writer") -> httpx.Client:
        return self.stack.http(self.tokens[who])

    def map(self, provider: str, task: str = "conversational") -> str:
        model = self.chat_model if task == "conversational" else self.image_model
        body = {"task": task, "hfModel": model, "providerModel": f"{provider}-model"}
        with self.http() as http:
            return ok(http.post(f"/api/partners/{provider}/models", json=body))["_id"]

    def typed_mappings(self, provider: str) -> list[registry_pb.ModelMapping]:
        """The provider's mappings as gRPC clients list them."""
        with self.stack.channel() as channel:
            metadata = [("authorization", f"Bearer {self.tokens['writer']}")]
            listing = registry_grpc.RegistryServiceStub(channel).ListModelMappings(
                registry_pb.ListModelMappingsRequest(provider=provider), metadata=metadata, timeout=10
            )
        return list(listing.model_mappings)

    def check(self, provider: str, mapping_id: str, who: str = "writer") -> dict:
        with self.http(who) as http:
            return ok(http.post(f"/api/partners/{provider}/models/{mapping_id}:check", json={}))


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory) -> Iterator[World]:
    ALL_SECRETS.extend([PROVIDER_KEY, BILLING_TOKEN])
    processes = Stack(tmp_path_factory.mktemp("providers"), dict(os.environ))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secrets = reference_provider_secrets(api_key=PROVIDER_KEY, billing_token=BILLING_TOKEN)
    processes.start("reference_provider", reference_provider_argv(port), http_ok(f"{url}/health"), env=secrets)
    try:
        processes.wait_ready()
        api = AdminApi(stack.base_url, stack.admin_token)
        suffix = uuid.uuid4().hex[:8]
        org = f"org-{suffix}"
        tokens = {}
        for who, role in (("writer", "write"), ("reader", "read")):
            api.ensure_member(org, f"{who}-{suffix}", role)
            tokens[who] = api.new_token(f"{who}-{suffix}")
        api.call("POST", "/admin/v1/users", {"name": f"outsider-{suffix}"})
        tokens["outsider"] = api.new_token(f"outsider-{suffix}")
        chat_model, image_model = f"{org}/chat", f"{org}/image"
        models = [
            {"id": chat_model, "pipelineTag": "text-generation", "tags": ["conversational"]},
            {"id": image_model, "pipelineTag": "text-to-image", "tags": []},
        ]
        api.call("POST", "/admin/v1/models:batchUpsert", {"models": models})
        yield World(stack, api, url, org, tokens, chat_model, image_model)
    finally:
        processes.stop()


def results(report: dict) -> dict[str, str]:
    return {check["name"]: check["result"] for check in report["checks"]}


def failed(report: dict) -> dict[str, str]:
    return {check["name"]: check["got"] for check in report["checks"] if check["result"] == "fail"}


def test_the_reference_provider_passes_every_chat_check(world) -> None:
    provider = world.provider()
    mapping_id = world.map(provider)
    report = world.check(provider, mapping_id)
    assert [c["name"] for c in report["checks"]] == ORDER
    expected = {name: "pass" for name in ORDER} | {name: "skipped" for name in [*IMAGE_CHECKS, "task"]}
    assert results(report) == expected, failed(report)
    assert report["passed"] is True and report["mappingId"] == mapping_id and report["provider"] == provider
    assert report["providerModel"] == f"{provider}-model" and report["task"] == "conversational"
    assert report["supportsTools"] is True and report["supportsStructuredOutput"] is True
    assert report["timeToFirstTokenMs"] > 0 and report["throughputTokensPerSecond"] > 0
    assert all(set(c) == {"name", "result", "expected", "got", "durationMs"} for c in report["checks"])
    with world.http() as http:
        stored = ok(http.get(f"/api/partners/{provider}/models/{mapping_id}/conformanceReport"))
        table = ok(http.get(f"/api/partners/{provider}/models"))
    assert stored == report
    entry = table["conversational"][world.chat_model]
    assert entry["conformance"] == {"passed": True, "checkTime": report["checkTime"]}
    assert entry["status"] == "staging" and "statusReason" not in entry


@given(st.datetimes(timezones=st.just(UTC)))
def test_the_tables_check_time_reads_as_the_typed_answers_does(moment: datetime) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    assert json_time(moment) == stamp.ToJsonString()
    assert datetime.fromisoformat(json_time(moment)) == moment


def test_the_typed_listing_carries_the_latest_report_in_brief(world) -> None:
    provider = world.provider()
    mapping_id = world.map(provider)
    report = world.check(provider, mapping_id)
    (mapping,) = world.typed_mappings(provider)
    summary = mapping.conformance
    assert (summary.passed, summary.passed_checks, summary.failed_checks, summary.skipped_checks) == (True, 8, 0, 3)
    assert summary.supports_tools and summary.supports_structured_output
    assert summary.check_time.ToJsonString() == report["checkTime"]
    assert mapping.status_reason == ""


def test_an_image_mapping_checks_url_and_b64_json_and_skips_chat(world) -> None:
    provider = world.provider(tasks=("text-to-image",))
    report = world.check(provider, world.map(provider, "text-to-image"))
    expected = {name: "pass" for name in ORDER} | {name: "skipped" for name in [*CHAT_CHECKS, "task", "latency"]}
    assert results(report) == expected, failed(report)
    assert report["passed"] is True and report["supportsTools"] is False


@pytest.mark.parametrize("task", sorted(CHECKED_TASKS))
def test_a_mapping_of_every_other_served_task_is_checked_with_a_sample_of_its_task(world, task: str) -> None:
    """The reference provider (its task read from the provider model id) passes the task's check, in
    the format the provider's registration gives the task; the answers' request ids reach the cost API."""
    provider = world.provider(tasks=(task,))
    model = f"{world.org}/{task}"
    world.api.call(
        "POST", "/admin/v1/models:batchUpsert", {"models": [{"id": model, "pipelineTag": task, "tags": [task]}]}
    )
    with world.http() as http:
        body = {"task": task, "hfModel": model, "providerModel": f"reference-{task}"}
        mapping_id = ok(http.post(f"/api/partners/{provider}/models", json=body))["_id"]
    report = world.check(provider, mapping_id)
    skipped = [*CHAT_CHECKS, *IMAGE_CHECKS, "error_shape", "latency"]
    expected = {name: "pass" for name in ORDER} | {name: "skipped" for name in skipped}
    assert results(report) == expected, failed(report)
    (check,) = [c for c in report["checks"] if c["name"] == "task"]
    assert task in check["expected"] and check["got"]


def test_a_task_answer_the_router_would_refuse_fails_the_task_check(world) -> None:
    """An embeddings mapping (the provider called in the hub's format) answered with a classification:
    not vectors, a fail that says why."""
    provider = world.provider(tasks=("feature-extraction",))
    world.api.call("PATCH", f"/admin/v1/providers/{provider}", {"task_formats": {"feature-extraction": "hub"}})
    model = f"{world.org}/embedder"
    catalog = {"id": model, "pipelineTag": "feature-extraction", "tags": ["feature-extraction"]}
    world.api.call("POST", "/admin/v1/models:batchUpsert", {"models": [catalog]})
    with world.http() as http:
        body = {"task": "feature-extraction", "hfModel": model, "providerModel": "reference-text-classification"}
        mapping_id = ok(http.post(f"/api/partners/{provider}/models", json=body))["_id"]
    report = world.check(provider, mapping_id)
    assert report["passed"] is False
    assert "task" in failed(report) and "embedding" in failed(report)["task"]


SWITCHES = [
    ("no-request-id", "request_id", "no Inference-Id header on 4 of 4 answers"),
    ("duplicate-request-ids", "request_id", "4 answers carried only 1 different ids"),
    ("float-costs", "cost_api", "costNanoUsd must be a JSON integer, got float"),
    ("negative-costs", "cost_api", "costNanoUsd must not be negative"),
    ("ignore-tools", "tools", "no tool_calls"),
    ("ignore-response-format", "response_format", "the content is not a JSON object"),
    ("no-done", "chat_stream", "without data: [DONE]"),
]


@pytest.mark.parametrize(("switch", "check", "reason"), SWITCHES, ids=[s[0] for s in SWITCHES])
def test_each_switch_fails_exactly_its_check_with_a_clear_reason(world, switch, check, reason) -> None:
    provider = world.provider(f"break={switch}")
    report = world.check(provider, world.map(provider))
    assert list(failed(report)) == [check], report["checks"]
    assert reason in failed(report)[check]
    assert report["passed"] is False
    assert report["supportsTools"] is (check != "tools")
    assert report["supportsStructuredOutput"] is (check != "response_format")
    assert_no_secret(str(report))


@pytest.mark.parametrize("switch", ["ignore-tools", "ignore-response-format"])
def test_the_check_makes_what_it_observed_the_mappings_capabilities(world, switch) -> None:
    provider = world.provider(f"break={switch}")
    mapping_id = world.map(provider)  # declares nothing: unknown
    (before,) = world.typed_mappings(provider)
    assert not before.HasField("supports_tools") and not before.HasField("supports_structured_output")
    world.check(provider, mapping_id)
    (after,) = world.typed_mappings(provider)
    observed = (after.supports_tools, after.supports_structured_output)
    assert observed == (switch != "ignore-tools", switch != "ignore-response-format")
    assert after.HasField("supports_tools") and after.HasField("supports_structured_output")
    assert not after.HasField("context_length")  # no check observes it: only a declaration sets it


def test_only_write_members_and_the_admin_token_check_or_read_reports(world) -> None:
    provider = world.provider()
    mapping_id = world.map(provider)
    path = f"/api/partners/{provider}/models/{mapping_id}"
    with world.http() as http:
        assert error_of(http.get(f"{path}/conformanceReport"), 404)["code"] == "report_not_found"
        assert error_of(http.post(f"/api/partners/{provider}/models/{'0' * 24}:check", json={}), 404)["code"] == (
            "mapping_not_found"
        )
    for who in ("reader", "outsider"):
        with world.http(who) as http:
            assert error_of(http.post(f"{path}:check", json={}), 403)["code"] == "forbidden"
            assert error_of(http.get(f"{path}/conformanceReport"), 403)["code"] == "forbidden"
    with world.stack.http() as anonymous:
        assert error_of(anonymous.post(f"{path}:check", json={}), 401)["code"] == "invalid_api_key"
    with world.stack.admin() as admin:
        assert ok(admin.post(f"{path}:check", json={}))["passed"] is True
        assert error_of(admin.post(f"{path}:check", json={"mappingId": "x"}), 400)["code"] == ("path_parameter_in_body")


def test_the_cli_runs_the_check_and_exits_1_when_a_check_failed(world, tmp_path, capsys) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(world.tokens["writer"])
    for knobs, status in (("", 0), ("break=no-done", 1)):
        provider = world.provider(knobs)
        mapping_id = world.map(provider)
        common = ["--url", world.stack.base_url, "--token-file", str(token_file)]
        with pytest.raises(SystemExit) as exit_status:
            main(["providers", "check", provider, mapping_id, *common])
        assert exit_status.value.code == status
        report = json.loads(capsys.readouterr().out)
        assert report["passed"] is (status == 0) and report["mappingId"] == mapping_id
        main(["providers", "report", provider, mapping_id, *common])
        assert json.loads(capsys.readouterr().out) == report


async def test_one_check_per_mapping_and_a_bounded_number_at_once() -> None:
    mapping = Mapping(
        id="a" * 24, seq=1, provider="p", type="model", task="conversational", hf_model="ns/m", tags=(),
        provider_model="m", status="staging", adapter_type="", create_time=datetime.now(UTC),
    )  # fmt: skip
    busy = Checker(HttpClient(), 1.0, running={mapping.id})
    with pytest.raises(ApiError) as refused:
        await busy.check(None, mapping, None)  # refused before anything is read or called
    assert (refused.value.grpc_code, refused.value.reason) == (grpc.StatusCode.ABORTED, "CHECK_IN_PROGRESS")
    full = Checker(HttpClient(), 1.0, most_at_once=2, running={"b" * 24, "c" * 24})
    with pytest.raises(ApiError) as refused:
        await full.check(None, mapping, None)
    assert (refused.value.grpc_code, refused.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CHECKS")
    assert full.running == {"b" * 24, "c" * 24}
