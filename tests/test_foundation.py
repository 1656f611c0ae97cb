"""The foundation: generated code, lint, the stack over gRPC and REST."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from switchboard.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from switchboard.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from switchboard.router.v1 import router_service_pb2, router_service_pb2_grpc

pytestmark = pytest.mark.e2e  # starts processes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVICES = {
    "registry": [
        "switchboard.registry.v1.RegistryService",
        "switchboard.registry.v1.AdminService",
        "switchboard.registry.v1.InternalService",
    ],
    "router": ["switchboard.router.v1.RouterService"],
    "billing": [
        "switchboard.billing.v1.BillingService",
        "switchboard.billing.v1.BillingAdminService",
        "switchboard.billing.v1.LedgerService",
    ],
}


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_generated_code_matches_protos() -> None:
    result = run(sys.executable, "scripts/generate.py", "--check")
    assert result.returncode == 0, result.stderr


def test_buf_lint_passes() -> None:
    result = run(str(BIN / "buf"), "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run carries the README's second command verbatim, so the two cannot drift apart."""
    readme_block = (ROOT / "README.md").read_text().split("```sh\n", 1)[1]
    test_command = readme_block.splitlines()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_is_healthy_and_reflects(stack, service: str) -> None:
    with stack.channel(service) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", *SERVICES[service]]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]))
        listed = {s.name for s in next(answers).list_services_response.service}
        assert set(SERVICES[service]) <= listed
        assert "grpc.health.v1.Health" in listed


@pytest.mark.parametrize("target", ["envoy", "direct"])
def test_grpc_clients_reach_every_public_service(stack, target: str) -> None:
    def channel(service: str) -> grpc.Channel:
        return stack.channel("envoy" if target == "envoy" else service)

    with channel("router") as ch:
        providers = router_service_pb2_grpc.RouterServiceStub(ch).ListProviders(
            router_service_pb2.ListProvidersRequest(), timeout=5
        )
        assert providers is not None
    with channel("registry") as ch, pytest.raises(grpc.RpcError) as error:
        registry_service_pb2_grpc.RegistryServiceStub(ch).GetProviderMappingTable(
            registry_service_pb2.GetProviderMappingTableRequest(provider="no-such-provider"), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with channel("billing") as ch, pytest.raises(grpc.RpcError) as error:
        billing_service_pb2_grpc.BillingServiceStub(ch).GetUsage(
            billing_service_pb2.GetUsageRequest(account="nobody"), timeout=5
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_internal_services_are_not_reachable_through_envoy(stack) -> None:
    from switchboard.registry.v1 import internal_service_pb2, internal_service_pb2_grpc

    with stack.channel("envoy") as ch, pytest.raises(grpc.RpcError) as error:
        internal_service_pb2_grpc.InternalServiceStub(ch).ListProviderConfigs(
            internal_service_pb2.ListProviderConfigsRequest(), timeout=5
        )
    assert error.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)


def test_rest_providers_answers_a_json_list(stack) -> None:
    with stack.http() as http:
        answer = http.get("/v1/providers")
    assert answer.status_code == 200
    assert isinstance(answer.json(), list)
    assert "grpc-status" not in answer.headers


def assert_openai_error(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_unknown_route_is_a_json_404(stack) -> None:
    with stack.http() as http:
        assert_openai_error(http.get("/no/such/route"), 404)


def test_partners_and_billing_routes_answer_json_errors(stack) -> None:
    with stack.http() as http:
        error = assert_openai_error(http.get("/api/partners/nobody/models"), 404)
        assert "nobody" in error["message"]
        assert_openai_error(http.get("/v1/billing/usage", params={"account": "x"}), 401)


def test_malformed_json_is_a_json_400(stack) -> None:
    with stack.http() as http:
        answer = http.post("/api/partners/p/models", json={"task": 5, "providerModel": "m"})
        assert "task" in assert_openai_error(answer, 400)["message"]


def test_unknown_query_parameter_is_a_json_400(stack) -> None:
    with stack.http() as http:
        assert "color" in assert_openai_error(http.get("/v1/providers?color=red"), 400)["message"]


def test_oversized_body_is_a_json_413(stack) -> None:
    with stack.http() as http:
        answer = http.post("/v1/chat/completions", content=b"x" * (9 * 1024 * 1024))
        assert_openai_error(answer, 413)
