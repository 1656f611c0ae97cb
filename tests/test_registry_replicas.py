"""Two Registry replicas on one database: each sees the other's writes."""

from __future__ import annotations

import sys

import grpc
import pytest
from helpers.registry import build_world, create_user, ok
from helpers.stacks import PresentCredential
from helpers.waiting import eventually
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc

from services.launcher import free_port, grpc_serving


@pytest.fixture
def replica(stack):
    """A second Registry process on the shared stack's database."""
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "services.registry", "--port", address.rsplit(":", 1)[1]]
    child = stack.stack.start("registry-replica", argv, grpc_serving(address))
    try:
        eventually(lambda: child.process.poll() is None and child.ready())
        with grpc.insecure_channel(address) as plain:
            yield grpc.intercept_channel(plain, PresentCredential(stack.service_credential))
        assert '"level":"ERROR"' not in child.log_path.read_text()
    finally:
        child.process.terminate()
        child.process.wait(timeout=30)
        stack.stack.children.remove(child)


def authenticates(internal, token: str) -> bool:
    try:
        internal.AuthenticateToken(internal_pb.AuthenticateTokenRequest(token=token), timeout=5)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False
    return True


def candidates(internal, model: str, user: str, task: str) -> list[str]:
    answer = internal.ResolveModel(internal_pb.ResolveModelRequest(model=model, user=user, task=task), timeout=5)
    return [c.provider_model for c in answer.candidates]


def test_replicas_share_every_write(stack, replica) -> None:
    on_replica = internal_grpc.InternalServiceStub(replica)
    with stack.admin() as admin:
        world = build_world(admin)  # through Envoy: the first replica
    writer = world.users["writer"]
    eventually(lambda: authenticates(on_replica, world.tokens["writer"]))
    url = f"/api/partners/{world.provider}/models"
    with stack.http(world.tokens["writer"]) as http:
        body = {"task": "text-to-image", "hfModel": world.models["image"], "providerModel": "img"}
        mapping_id = ok(http.post(url, json=body))["_id"]
    eventually(lambda: candidates(on_replica, world.models["image"], writer, "text-to-image") == ["img"])
    assert candidates(on_replica, world.models["image"], "", "text-to-image") == []  # staging
    with stack.http(world.tokens["writer"]) as http:
        ok(http.put(f"{url}/{mapping_id}/status", json={"status": "live"}))
    eventually(lambda: candidates(on_replica, world.models["image"], "", "text-to-image") == ["img"])

    # a write on the second replica reaches the first
    request = registry_pb.CreateModelMappingRequest(
        provider=world.provider,
        task="text-to-image",
        hf_model=world.models["lora2"],
        provider_model="l2",
        status="live",
    )
    metadata = (("authorization", f"Bearer {world.tokens['writer']}"),)
    registry_grpc.RegistryServiceStub(replica).CreateModelMapping(request, metadata=metadata, timeout=5)
    with stack.channel("registry") as channel:
        on_first = internal_grpc.InternalServiceStub(channel)
        eventually(lambda: candidates(on_first, world.models["lora2"], "", "text-to-image") == ["l2"])

    with stack.admin() as admin:
        ok(admin.delete(f"/admin/v1/users/{world.users['outsider']}/tokens/main"))
        ok(admin.delete(f"/admin/v1/providers/{world.provider}"))
    eventually(lambda: not authenticates(on_replica, world.tokens["outsider"]))
    eventually(lambda: candidates(on_replica, world.models["image"], writer, "text-to-image") == [])


def test_a_write_on_one_replica_is_usable_on_the_other_at_once(stack, replica) -> None:
    """No waiting for the other replica's poll: a lookup it would refuse first catches up."""
    on_replica = internal_grpc.InternalServiceStub(replica)
    partners = registry_grpc.RegistryServiceStub(replica)
    with stack.admin() as admin:
        world = build_world(admin)  # through Envoy: the first replica
        for round_number in range(5):
            user, token = create_user(admin, world.org, "write")
            assert authenticates(on_replica, token)
            model = {"id": f"{world.models['chat']}-{round_number}", "pipelineTag": "text-to-image"}
            ok(admin.post("/admin/v1/models:batchUpsert", json={"models": [model]}))
            request = registry_pb.CreateModelMappingRequest(
                provider=world.provider, task="text-to-image", hf_model=model["id"], provider_model="m", status="live"
            )
            metadata = (("authorization", f"Bearer {token}"),)
            partners.CreateModelMapping(request, metadata=metadata, timeout=5)
            assert candidates(on_replica, model["id"], user, "text-to-image") == ["m"]
