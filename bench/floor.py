"""The architecture's floor: Switchboard's own Envoy configuration (Lua filter,
buffer, gRPC-JSON transcoder) in front of a grpc.aio RouterService that does
nothing but parse the body, pick the stub upstream by model and forward the
request with one pooled aiohttp session: no Registry, no Billing, no auth.

What the real Router adds over this floor is the cost of its own logic; what
the floor adds over direct is the cost of the design (Envoy + transcoding +
gRPC in Python), which no tuning of the Router's code can remove.

    python -m bench.floor <grpc port> <unary url> <stream url> <paced url>
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import grpc
import orjson
from google.api import httpbody_pb2
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common.server import create_server, run, serve

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=30)
FLOOR_MODELS = {
    "chat": "floor-unary",
    "image": "floor-unary",
    "embed": "floor-unary",
    "stream": "floor-stream",
    "paced": "floor-paced",
}


class FloorRouter(router_grpc.RouterServiceServicer):
    """Forwards chat and image requests to the upstream named by the body's model."""

    def __init__(self, session: aiohttp.ClientSession, upstreams: dict[str, str]) -> None:
        self.session = session
        self.upstreams = upstreams  # model -> base URL ending in /v1

    async def _forward(self, path: str, body: httpbody_pb2.HttpBody) -> AsyncIterator[httpbody_pb2.HttpBody]:
        model = orjson.loads(body.data).get("model", "")
        url = self.upstreams[model] + path
        headers = {"Content-Type": "application/json", "Authorization": "Bearer stub-key"}
        async with self.session.post(url, data=body.data, headers=headers) as answer:
            content_type = answer.headers.get("Content-Type", "application/json")
            async for piece in answer.content.iter_any():
                yield httpbody_pb2.HttpBody(content_type=content_type, data=piece)

    async def CreateChatCompletion(
        self, request: router_pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for piece in self._forward("/chat/completions", request.body):
            yield piece

    async def _unary(self, path: str, body: httpbody_pb2.HttpBody) -> httpbody_pb2.HttpBody:
        pieces = [p.data async for p in self._forward(path, body)]
        return httpbody_pb2.HttpBody(content_type="application/json", data=b"".join(pieces))

    async def CreateImage(
        self, request: router_pb.CreateImageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return await self._unary("/images/generations", request.body)

    async def CreateEmbedding(
        self, request: router_pb.CreateEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        return await self._unary("/embeddings", request.body)


async def main(port: int, unary: str, stream: str, paced: str) -> None:
    upstreams = {"floor-unary": unary, "floor-stream": stream, "floor-paced": paced}
    async with aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT) as session:
        registration = (
            router_grpc.add_RouterServiceServicer_to_server,
            FloorRouter(session, upstreams),
            "switchboard.router.v1.RouterService",
        )
        server, _, health = create_server([registration], "127.0.0.1", port)
        await serve(server, health, [registration[2]], 1.0)


if __name__ == "__main__":
    run(lambda: main(int(sys.argv[1]), *sys.argv[2:5]))
