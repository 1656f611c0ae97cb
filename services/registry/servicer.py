"""The Registry's gRPC servicers."""

from __future__ import annotations

import grpc
import orjson
from google.protobuf import struct_pb2
from sqlmodel import Session, select
from switchboard.registry.v1 import (
    admin_service_pb2 as admin_pb,
)
from switchboard.registry.v1 import (
    admin_service_pb2_grpc as admin_grpc,
)
from switchboard.registry.v1 import (
    internal_service_pb2 as internal_pb,
)
from switchboard.registry.v1 import (
    internal_service_pb2_grpc as internal_grpc,
)
from switchboard.registry.v1 import (
    registry_service_pb2 as registry_pb,
)
from switchboard.registry.v1 import (
    registry_service_pb2_grpc as registry_grpc,
)

from services.common.auth import is_admin_token
from services.common.db import Database
from services.common.errors import ApiError, not_found
from services.registry.config import RegistrySettings
from services.registry.storage import ProviderRow


def provider_message(row: ProviderRow, *, with_secrets: bool = False) -> admin_pb.Provider:
    """A provider row as a message; secrets only for internal callers."""
    message = admin_pb.Provider(
        id=row.id,
        org=row.org,
        base_url=row.base_url,
        tasks=orjson.loads(row.tasks),
        request_id_header=row.request_id_header,
        billing_url=row.billing_url,
        has_api_key=bool(row.api_key),
        has_billing_authorization=bool(row.billing_authorization),
        default_rank=row.default_rank,
    )
    message.create_time.FromDatetime(row.create_time)
    if with_secrets:
        message.api_key = row.api_key
        message.billing_authorization = row.billing_authorization
    return message


class RegistryServicer(registry_grpc.RegistryServiceServicer):
    """The partners API."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetProviderMappingTable(
        self, request: registry_pb.GetProviderMappingTableRequest, context: grpc.aio.ServicerContext
    ) -> struct_pb2.Struct:
        provider = await self.db.run(lambda s: s.get(ProviderRow, request.provider))
        if provider is None:
            raise not_found(f"provider {request.provider!r} does not exist", code="provider_not_found")
        return struct_pb2.Struct()


class AdminServicer(admin_grpc.AdminServiceServicer):
    """The operators' admin API."""

    def __init__(self, db: Database, settings: RegistrySettings) -> None:
        self.db = db
        self.settings = settings


class InternalServicer(internal_grpc.InternalServiceServicer):
    """What the Router and Billing ask of the Registry."""

    def __init__(self, db: Database, settings: RegistrySettings) -> None:
        self.db = db
        self.admin_token = settings.admin_token.get_secret_value()

    async def AuthenticateToken(
        self, request: internal_pb.AuthenticateTokenRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.Caller:
        if is_admin_token(request.token, self.admin_token):
            return internal_pb.Caller(admin=True)
        raise ApiError(401, "invalid token", code="invalid_api_key")

    async def ListProviderConfigs(
        self, request: internal_pb.ListProviderConfigsRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb.ListProviderConfigsResponse:
        def load(session: Session) -> list[ProviderRow]:
            return list(session.exec(select(ProviderRow).order_by(ProviderRow.id)))

        rows = await self.db.run(load)
        configs = [internal_pb.ProviderConfig(provider=provider_message(r, with_secrets=True)) for r in rows]
        return internal_pb.ListProviderConfigsResponse(providers=configs)
