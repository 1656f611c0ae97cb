"""Everything the Registry holds survives a restart of the Registry process."""

from __future__ import annotations

import pytest
from helpers.registry import build_world, create_user, error_of, ok
from helpers.waiting import eventually
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

pytestmark = pytest.mark.slow


def restart_registry(running) -> None:
    """Stops the registry child and starts it again on the same port and data directory."""
    stack = running.stack
    old = next(c for c in stack.children if c.name == "registry")
    old.process.terminate()
    old.process.wait(timeout=30)
    stack.children.remove(old)
    port = int(running.address("registry").rsplit(":", 1)[1])
    child = stack.start_service("registry", port)
    eventually(lambda: child.process.poll() is not None or child.ready(), "the registry ready after restart")
    assert child.process.poll() is None, child.tail()


def snapshot(running, world) -> dict:
    """What the Registry answers about the world, over REST and gRPC."""
    with running.admin() as admin:
        state = {
            "provider": ok(admin.get(f"/admin/v1/providers/{world.provider}")),
            "org": ok(admin.get(f"/admin/v1/orgs/{world.org}")),
            "writer": ok(admin.get(f"/admin/v1/users/{world.users['writer']}")),
            "model": ok(admin.get(f"/admin/v1/models/{world.models['lora']}")),
        }
    with running.http() as http:
        state["table"] = ok(http.get(f"/api/partners/{world.provider}/models"))
    with running.channel("registry") as channel:
        internal = internal_grpc.InternalServiceStub(channel)
        state["resolved"] = [
            str(
                internal.ResolveModel(
                    internal_pb.ResolveModelRequest(model=world.models[name], user=user, task=task), timeout=10
                )
            )
            for name, task in (("chat", "conversational"), ("lora", "text-to-image"))
            for user in (world.users["writer"], world.users["outsider"])
        ]
        state["caller"] = str(
            internal.AuthenticateToken(internal_pb.AuthenticateTokenRequest(token=world.tokens["writer"]), timeout=10)
        )
    return state


def test_state_survives_a_registry_restart(make_stack) -> None:
    running = make_stack()
    with running.admin() as admin:
        world = build_world(admin)
        user, revoked = create_user(admin, world.org, "write")
    with running.http(world.tokens["writer"]) as http:
        url = f"/api/partners/{world.provider}/models"
        ok(
            http.post(
                url,
                json={
                    "task": "conversational",
                    "hfModel": world.models["chat"],
                    "providerModel": "c",
                    "status": "live",
                },
            )
        )
        body = {
            "type": "tag-filter",
            "task": "text-to-image",
            "tags": ["lora"],
            "providerModel": "l",
            "adapterType": "lora",
        }
        ok(http.post(url, json=body))
        ok(http.put("/v1/settings/provider-preferences", json={"providers": [world.provider]}))
    with running.admin() as admin:
        ok(admin.delete(f"/admin/v1/users/{user}/tokens/main"))
    before = snapshot(running, world)
    restart_registry(running)
    after = snapshot(running, world)
    assert after == before
    assert "preferred_providers" in after["caller"]
    with running.http(revoked) as http:
        error_of(http.post(url, json=body), 401)
    with running.http(world.tokens["writer"]) as http:
        error_of(http.post(url, json=body), 409)  # the unique key survived too
        ok(http.post(url, json={**body, "tags": ["lora", "x"]}))
