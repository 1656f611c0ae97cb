"""The Router's gRPC servicer."""

from __future__ import annotations

import grpc
from google.protobuf import struct_pb2
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

REGISTRY_TIMEOUT = 5.0


class RouterServicer(router_grpc.RouterServiceServicer):
    """OpenAI-compatible inference over the Registry's resolution."""

    def __init__(self, registry: internal_grpc.InternalServiceStub) -> None:
        self.registry = registry

    async def ListProviders(
        self, request: router_pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> struct_pb2.ListValue:
        configs = await self.registry.ListProviderConfigs(
            internal_pb.ListProviderConfigsRequest(), timeout=REGISTRY_TIMEOUT
        )
        providers = struct_pb2.ListValue()
        for config in configs.providers:
            p = config.provider
            providers.append({"id": p.id, "url": p.base_url, "tasks": list(p.tasks)})
        return providers
