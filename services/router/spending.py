"""The Router's side of spending limits: reservations before a provider call.

Billing pushes which accounts have a limit (WatchLimitedAccounts) and waits
for this Router's acknowledgement before it answers a limit change, so a new
limit applies to the next request. Requests of accounts without a limit never
call Billing. While the push stream is down, every request asks Billing.

Reservations are sent in batches (BatchReserveSpend): those asked while a batch is on its
way go together in the next one, so under load one call carries many; alone, a reservation is
sent at once. Billing decides most of them in memory, so a batch comes back quickly and would
carry one or two: once batches carry company (concurrent callers), the next waits up to
LINGER_SECONDS for more, which halves the calls (each costs both processes more CPU than the
decisions it carries) for a small delay of requests that wait in queues anyway.

Availability wins when Billing is away: a reservation that fails or times out
lets the request proceed unchecked, and after `breaker_failures` such
failures in a row the Router stops asking for `breaker_cooldown` seconds
(then one probe): Billing away costs one timeout per cooldown, not one per
request.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.common.backoff import Backoff
from services.common.errors import ApiError, Code
from services.common.logs import Throttled
from services.common.telemetry import RESERVATIONS_REFUSED
from services.router.breaker import Breakers

log = logging.getLogger(__name__)

BILLING = "billing"  # the breaker's key
WATCH_BACKOFF_MAX_SECONDS = 5.0
RELEASE_TIMEOUT_SECONDS = 10.0
LARGEST_BATCH = 512  # reservations per BatchReserveSpend
LINGER_SECONDS = 0.002  # under concurrency, a batch waits this long for more reservations
FULL_BATCH = 16  # ... unless it has this many already


class _Batches:
    """Sends reservations in batches, one batch on its way at a time; each waits at most `timeout`.
    The breaker hears once per batch (a failed batch is one failure of Billing, not one per
    reservation in it, which would open the breaker at once)."""

    def __init__(self, stub: billing_grpc.LedgerServiceStub, timeout: float, breaker: Breakers) -> None:
        self.stub = stub
        self.timeout = timeout
        self.breaker = breaker
        self._waiting: list[tuple[billing_pb.ReserveSpendRequest, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self._crowded = False  # the last batch carried more than one reservation

    async def reserve(self, request: billing_pb.ReserveSpendRequest) -> billing_pb.ReserveSpendResponse:
        """Billing's answer; raises AioRpcError when the batch failed, TimeoutError after `timeout`."""
        answer: asyncio.Future[billing_pb.ReserveSpendResponse] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_batches())
        return await asyncio.wait_for(answer, self.timeout)

    async def _send_batches(self) -> None:
        try:
            while self._waiting:
                if self._crowded and len(self._waiting) < FULL_BATCH:
                    await asyncio.sleep(LINGER_SECONDS)
                batch = [(r, a) for r, a in self._waiting[:LARGEST_BATCH] if not a.done()]  # not timed out
                del self._waiting[:LARGEST_BATCH]
                self._crowded = len(batch) > 1
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[tuple[billing_pb.ReserveSpendRequest, asyncio.Future]]) -> None:
        request = billing_pb.BatchReserveSpendRequest(requests=[r for r, _ in batch])
        try:
            answer = await self.stub.BatchReserveSpend(request, timeout=self.timeout)
            outcomes: list = list(answer.responses)
            self.breaker.succeeded(BILLING)
        except grpc.aio.AioRpcError as exc:
            outcomes = [exc] * len(batch)
            self.breaker.failed(BILLING)
        for (_, waiting), outcome in zip(batch, outcomes, strict=True):
            if waiting.done():
                continue
            if isinstance(outcome, BaseException):
                waiting.set_exception(outcome)
            else:
                waiting.set_result(outcome)


class Spending:
    """Reservations against Billing, guided by the pushed set of limited accounts."""

    def __init__(self, stub: billing_grpc.LedgerServiceStub, reserve_timeout: float, breaker: Breakers) -> None:
        self.stub = stub
        self.batches = _Batches(stub, reserve_timeout, breaker)
        self.breaker = breaker
        self.limited: set[str] | None = None  # None while the push stream is down: ask for every account
        self.revision = 0
        self._warning = Throttled(log)
        self._tasks: set[asyncio.Task] = set()

    async def reserve(self, request_id: str, account: str, estimate_nano_usd: int) -> bool:
        """Reserves the estimate; 402 when Billing refuses. Returns whether a reservation is held."""
        if self.limited is not None and account not in self.limited:
            return False
        if not self.breaker.allow(BILLING):
            self._warning.warning("billing failing (breaker open): requests proceed without a spending check")
            return False
        request = billing_pb.ReserveSpendRequest(
            request_id=request_id, account=account, estimated_nano_usd=estimate_nano_usd
        )
        try:
            answer = await self.batches.reserve(request)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            # Not throttled: the breaker (told by the batch) bounds these to a few per cooldown.
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "DEADLINE_EXCEEDED"
            log.warning("reservation failed: the request proceeds without a spending check", extra={"code": code})
            self._gave_up(request_id)
            return False
        except asyncio.CancelledError:
            self._gave_up(request_id)
            raise
        if not answer.granted:
            RESERVATIONS_REFUSED.inc()
            raise ApiError(
                Code.RESOURCE_EXHAUSTED,
                "INSUFFICIENT_QUOTA",
                f"the spending limit of account {account} is reached; raise it or add credits",
            )
        return answer.remaining_nano_usd >= 0

    def _gave_up(self, request_id: str) -> None:
        """A reservation not waited for: its batch may still be granted, so its hold is released
        (releasing is idempotent); a half-open breaker's probe is free again if it never went."""
        self.breaker.released(BILLING)
        self.release(request_id)

    def release(self, request_id: str) -> None:
        """Releases a reservation in the background (no provider answered)."""
        task = asyncio.create_task(self._release(request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, request_id: str) -> None:
        try:
            await self.stub.ReleaseReservation(
                billing_pb.ReleaseReservationRequest(request_id=request_id), timeout=RELEASE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            self._warning.warning("could not release a reservation; Billing expires it", code=exc.code().name)

    @property
    def following(self) -> bool:
        """Whether Billing's limited accounts are known (the push stream is up): else every request asks."""
        return self.limited is not None

    def apply(self, update: billing_pb.WatchLimitedAccountsResponse) -> None:
        """Applies one pushed change (or the snapshot that starts a stream)."""
        if update.snapshot or self.limited is None:
            self.limited = set(update.limited)
        else:
            self.limited.update(update.limited)
        self.limited.difference_update(update.unlimited)
        self.revision = update.revision

    async def watch(self) -> None:
        """Follows Billing's limited accounts for ever, acknowledging each change; reconnects with backoff."""
        backoff = Backoff(0.1, WATCH_BACKOFF_MAX_SECONDS)
        while True:
            call = self.stub.WatchLimitedAccounts(wait_for_ready=True)
            try:
                while (update := await call.read()) is not grpc.aio.EOF:
                    self.apply(update)
                    await call.write(billing_pb.WatchLimitedAccountsRequest(applied_revision=update.revision))
                    backoff.reset()
            except grpc.aio.AioRpcError as exc:
                log.warning("billing's limit feed lost", extra={"code": exc.code().name})
            finally:
                self.limited = None
                call.cancel()
            await asyncio.sleep(backoff.failed())
