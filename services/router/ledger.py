"""The Router's side of Billing: reservations before a provider call, and ledger
records after it, through a local spool that loses nothing when Billing is down.

Records are kept in memory for at most one flush interval (~100 ms), then written
to a spool file (fsync'd) under the data directory by a background task; the
spool files are sent to Billing with RecordRequests, oldest first, and deleted
once Billing acknowledged them (Billing dedupes by request id, so a batch sent
twice is harmless). Files left by a previous run are sent on start. The caller
never waits for any of this.

Reservations: when Billing cannot be reached the request proceeds (availability
before strict limits) and a warning is logged at most every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from pathlib import Path

import grpc
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.billing.v1 import billing_service_pb2_grpc as billing_grpc

from services.common.errors import ApiError

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.1
SEND_TIMEOUT_SECONDS = 10.0
RETRY_MAX_SECONDS = 30.0
WARN_EVERY_SECONDS = 10.0
MAX_RECORDS_PER_CALL = 10_000
UNLIMITED_CACHE_SECONDS = 1.0
MAX_CACHED_ACCOUNTS = 100_000
_REJECTED_CODES = {grpc.StatusCode.INVALID_ARGUMENT}


class Ledger:
    """Reservations (on the caller's path, bounded by a short deadline) and the record spool (off it)."""

    def __init__(
        self,
        stub: billing_grpc.LedgerServiceStub,
        spool_dir: Path,
        batch_size: int,
        reserve_timeout: float,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self.stub = stub
        self.spool_dir = spool_dir
        self.batch_size = max(1, min(batch_size, MAX_RECORDS_PER_CALL))
        self.reserve_timeout = reserve_timeout
        self.send_timeout = send_timeout
        self.pending: list[billing_pb.LedgerRecord] = []
        self._spooled: list[tuple[Path, billing_pb.RecordRequestsRequest | None]] = []
        self._unlimited: dict[str, float] = {}  # account -> until when it needs no reservation
        self._sequence = itertools.count()
        self._tasks: set[asyncio.Task] = set()
        self._last_warning = 0.0
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._wake = asyncio.Event()

    def _warn(self, message: str, exc: grpc.aio.AioRpcError) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(message, extra={"code": exc.code().name})

    async def reserve(self, request_id: str, account: str, estimate_nano_usd: int) -> bool:
        """Reserves the estimate; 402 when Billing refuses. Returns whether a reservation is held.

        An account Billing called unlimited (remaining -1, nothing held) is not asked
        again for UNLIMITED_CACHE_SECONDS: a new limit takes effect within that time."""
        if self._unlimited.get(account, 0.0) > time.monotonic():
            return False
        request = billing_pb.ReserveSpendRequest(
            request_id=request_id, account=account, estimated_nano_usd=estimate_nano_usd
        )
        try:
            answer = await self.stub.ReserveSpend(request, timeout=self.reserve_timeout)
        except grpc.aio.AioRpcError as exc:
            self._warn("billing unreachable: requests proceed without a spending check", exc)
            return False
        if not answer.granted:
            raise ApiError(
                402,
                f"the spending limit of account {account} is reached; raise it or add credits",
                code="insufficient_quota",
            )
        if answer.remaining_nano_usd < 0:
            if len(self._unlimited) >= MAX_CACHED_ACCOUNTS:
                self._unlimited.clear()
            self._unlimited[account] = time.monotonic() + UNLIMITED_CACHE_SECONDS
            return False
        return True

    def release(self, request_id: str) -> None:
        """Releases a reservation in the background (no provider answered)."""
        task = asyncio.create_task(self._release(request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, request_id: str) -> None:
        try:
            await self.stub.ReleaseReservation(
                billing_pb.ReleaseReservationRequest(request_id=request_id), timeout=self.send_timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._warn("could not release a reservation; Billing expires it", exc)

    def record(self, record: billing_pb.LedgerRecord) -> None:
        """Queues a served request's record; returns at once."""
        self.pending.append(record)
        if len(self.pending) >= self.batch_size:
            self._wake.set()

    def load_spool(self) -> None:
        """Picks up spool files a previous run left."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.spool_dir.glob("*.tmp"):
            leftover.unlink()
        self._spooled = [(path, None) for path in sorted(self.spool_dir.glob("*.batch"))]
        if self._spooled:
            log.info("resending spooled ledger batches", extra={"files": len(self._spooled)})

    def _write(self, batch: billing_pb.RecordRequestsRequest) -> Path:
        name = f"{time.time_ns():020d}-{next(self._sequence):06d}.batch"
        temporary = self.spool_dir / (name + ".tmp")
        with open(temporary, "wb") as f:
            f.write(batch.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        final = self.spool_dir / name
        os.replace(temporary, final)
        return final

    async def spool_pending(self) -> None:
        """Writes the queued records to spool files (on a worker thread); keeps them in memory to send."""
        while self.pending:
            chunk = self.pending[: self.batch_size]
            batch = billing_pb.RecordRequestsRequest(records=chunk)
            path = await asyncio.to_thread(self._write, batch)
            del self.pending[: len(chunk)]  # only once on disk; new records were appended meanwhile
            self._spooled.append((path, batch))

    async def send_spooled(self) -> bool:
        """Sends spooled batches oldest first, deleting each acknowledged file; False when
        Billing failed (retry later)."""
        done: list[Path] = []
        try:
            while self._spooled:
                path, batch = self._spooled[0]
                if batch is None:
                    batch = billing_pb.RecordRequestsRequest.FromString(await asyncio.to_thread(path.read_bytes))
                try:
                    await self.stub.RecordRequests(batch, timeout=self.send_timeout, wait_for_ready=True)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in _REJECTED_CODES:
                        self._warn("billing unreachable: ledger records stay spooled", exc)
                        return False
                    log.error("billing rejected a ledger batch; kept aside", extra={"file": path.name})
                    await asyncio.to_thread(os.replace, path, path.with_suffix(".rejected"))
                else:
                    done.append(path)
                self._spooled.pop(0)
            return True
        finally:
            if done:
                await asyncio.to_thread(_unlink_all, done)

    async def run(self) -> None:
        """The background sender: spool every flush interval, send with backoff on failure."""
        self.load_spool()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                await self._flush()
            except OSError:  # e.g. a full disk: records stay queued in memory, tried again
                log.exception("cannot write the ledger spool")
                self._back_off()
                await asyncio.sleep(self._retry_delay)

    async def _flush(self) -> None:
        await self.spool_pending()
        if self._retry_delay and time.monotonic() < self._retry_at:
            return
        if await self.send_spooled():
            self._retry_delay = 0.0
        else:
            self._back_off()

    def _back_off(self) -> None:
        self._retry_delay = min(RETRY_MAX_SECONDS, max(0.2, self._retry_delay * 2))
        self._retry_at = time.monotonic() + self._retry_delay

    async def close(self) -> None:
        """On stop: nothing queued stays only in memory; one last send attempt."""
        await self.spool_pending()
        if self._spooled:
            try:
                await asyncio.wait_for(self.send_spooled(), self.send_timeout)
            except TimeoutError:
                log.warning("billing slow at stop: ledger records stay spooled for the next start")


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
