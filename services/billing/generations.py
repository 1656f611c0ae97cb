"""The generation lookup: one served request by its id, with its estimated and settled cost."""

from __future__ import annotations

import grpc
from sqlmodel import Session
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.billing.access import Authenticator, may_manage
from services.billing.storage import LedgerEntry
from services.common.db import Database
from services.common.errors import invalid_argument, not_found
from services.common.pricing import NANO_PER_USD

MAX_ID = 64  # our request ids are UUIDs (36 characters)


def may_read(caller: internal_pb.Caller, entry: LedgerEntry) -> bool:
    """The caller who made the request, whoever manages the account it was billed to
    (its user, its org's admins), and the admin token."""
    return bool(caller.user and caller.user == entry.caller) or may_manage(caller, entry.account)


def _milliseconds(entry: LedgerEntry) -> int:
    return max(0, round((entry.end_time - entry.start_time).total_seconds() * 1000))


def generation_message(entry: LedgerEntry) -> billing_pb.Generation:
    generation = billing_pb.Generation(
        id=entry.request_id,
        provider=entry.provider,
        model=entry.model,
        provider_model=entry.provider_model,
        task=entry.task,
        account=entry.account,
        input_tokens=entry.input_tokens,
        output_tokens=entry.output_tokens,
        time_to_first_token_ms=entry.first_token_ms,
        total_time_ms=_milliseconds(entry),
        estimated_nano_usd=entry.estimated_nano_usd,
        estimated_cost=entry.estimated_nano_usd / NANO_PER_USD,
        reconciliation_state=entry.state,
        reason=entry.reason,
    )
    generation.create_time.FromDatetime(entry.start_time)
    if entry.cost_nano_usd is not None:
        generation.settled_nano_usd = entry.cost_nano_usd
        generation.settled_cost = entry.cost_nano_usd / NANO_PER_USD
    return generation


class GenerationsMixin:
    """BillingService.GetGeneration."""

    db: Database
    auth: Authenticator

    async def GetGeneration(
        self, request: billing_pb.GetGenerationRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb.Generation:
        caller = await self.auth.caller(context)
        if not request.id or len(request.id) > MAX_ID:
            raise invalid_argument("INVALID_REQUEST", f"id must be a request id of 1 to {MAX_ID} characters", "id")

        def read(session: Session) -> LedgerEntry | None:
            entry = session.get(LedgerEntry, request.id)
            if entry is not None:
                session.expunge(entry)
            return entry

        entry = await self.db.run(read)
        if entry is None or not may_read(caller, entry):  # another caller's request is as unknown as none
            raise not_found("GENERATION_NOT_FOUND", f"no request {request.id!r} of yours was found", "id")
        return generation_message(entry)
