"""The Router process: create_server(), serve(), main()."""

from __future__ import annotations

from switchboard.registry.v1 import internal_service_pb2_grpc
from switchboard.router.v1 import router_service_pb2_grpc

from services.common.logs import configure_logging
from services.common.server import run
from services.common.service import channel, run_service
from services.router.config import RouterSettings
from services.router.servicer import RouterServicer


async def serve(settings: RouterSettings) -> None:
    """Runs the Router until SIGTERM; the Registry's stub is injected here."""
    registry_channel = channel(settings.registry_address)
    servicer = RouterServicer(internal_service_pb2_grpc.InternalServiceStub(registry_channel))
    registrations = [
        (
            router_service_pb2_grpc.add_RouterServiceServicer_to_server,
            servicer,
            "switchboard.router.v1.RouterService",
        )
    ]

    async def close() -> None:
        await registry_channel.close()

    await run_service("router", settings, registrations, on_stop=close)


def main(argv: list[str] | None = None) -> None:
    settings = RouterSettings.from_args("python -m services.router", argv)
    configure_logging("router", settings.log_level)
    run(lambda: serve(settings))
