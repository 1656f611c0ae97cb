"""Billing's gRPC servicers."""

from __future__ import annotations

import grpc
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.registry.v1 import internal_service_pb2_grpc as internal_grpc

from services.common.auth import bearer_token
from services.common.db import Database

REGISTRY_TIMEOUT = 5.0


class BillingServicer(billing_grpc.BillingServiceServicer):
    """Usage, accounts and limits for callers."""

    def __init__(self, db: Database, registry: internal_grpc.InternalServiceStub) -> None:
        self.db = db
        self.registry = registry

    async def authenticate(self, context: grpc.aio.ServicerContext) -> internal_pb.Caller:
        return await self.registry.AuthenticateToken(
            internal_pb.AuthenticateTokenRequest(token=bearer_token(context)), timeout=REGISTRY_TIMEOUT
        )

    async def GetUsage(
        self, request: billing_pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Usage:
        await self.authenticate(context)
        raise NotImplementedError


class BillingAdminServicer(billing_grpc.BillingAdminServiceServicer):
    """The operators' billing calls."""


class LedgerServicer(billing_grpc.LedgerServiceServicer):
    """Ledger records and reservations from the Router."""
