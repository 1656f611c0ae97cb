"""Helpers shared by the Billing tests: ledger records, a cost API stub
(the provider's side is outside the product) and gRPC stubs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from switchboard.billing.v1 import billing_service_pb2 as billing_pb


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def record(
    account: str,
    provider: str = "prov",
    *,
    provider_request_id: str | None = None,
    estimate: int = 1_000,
    model: str = "org/model",
    start: datetime | None = None,
) -> billing_pb.LedgerRecord:
    """A served request's ledger record; a provider request id is made up unless given ("" for none)."""
    started = start or datetime.now(UTC)
    entry = billing_pb.LedgerRecord(
        request_id=unique("req"),
        provider_request_id=unique("p") if provider_request_id is None else provider_request_id,
        provider=provider,
        model=model,
        provider_model=model + "-prov",
        task="conversational",
        caller=account,
        account=account,
        input_tokens=10,
        output_tokens=20,
        estimated_nano_usd=estimate,
    )
    entry.start_time.FromDatetime(started)
    entry.end_time.FromDatetime(started)
    return entry


class CostApiStub:
    """A provider's cost API on 127.0.0.1; `answer(ids)` decides each reply.

    `answer` returns (status, body bytes) or raises to drop the connection.
    Remembers every request (ids and the Authorization header).
    """

    def __init__(self, answer: Callable[[list[str]], Awaitable[tuple[int, bytes]]]) -> None:
        self.answer = answer
        self.calls: list[list[str]] = []
        self.authorizations: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        ids = (await request.json())["requestIds"]
        self.calls.append(ids)
        self.authorizations.append(request.headers.get("Authorization", ""))
        status, body = await self.answer(ids)
        return web.Response(status=status, body=body, content_type="application/json")

    async def __aenter__(self) -> CostApiStub:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/billing/costs", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/billing/costs"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
