"""The reconciler: asks each provider's cost API what pending requests cost
and settles them.

Per provider, pending requests are read in request id order, page by page
(batch_size), and each page is one `POST <billing_url>` with the provider's
Authorization and {"requestIds": [...]}; up to `concurrency` pages are in
flight per provider. Each page's valid costs are settled in one transaction
that only touches pending rows, so a crash anywhere (even between the
answer and the write) never charges twice and never loses a cost: what was
not written is asked again on the next pass.

Several Billing replicas may reconcile at once: each page is claimed first
(ledger.claim_page) for the cost API's timeout plus a few seconds, so no two
reconcilers ask for the same request at once (settling only pending rows
already keeps any from being charged twice); what a page leaves pending is
released for the next pass, and the claims of a killed replica run out.

A failing cost API (non-200, invalid JSON, timeout, connection error)
changes nothing; the provider is skipped by background passes for an
exponentially growing while. Requests that stay pending longer than
`unpriced_after_seconds` after they ended become unpriced and keep their
estimate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import orjson

from services.billing import ledger
from services.common import telemetry
from services.common.backoff import Backoff
from services.common.costs import InvalidCostAnswer, parse_cost_answer
from services.common.db import Database
from services.common.provider_api import AttemptFailed, read_capped
from services.common.secrets import NO_SECRETS, Redactor

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)
# How long a claim outlives the cost API's timeout: the time to write the page's settlements.
CLAIM_MARGIN_SECONDS = 5.0
# How long one pass claims new pages of one provider's backlog (pages under way then finish).
PROVIDER_PASS_SECONDS = 60.0


@dataclass(frozen=True)
class CostApi:
    """Where and how to ask one provider for costs."""

    provider: str
    url: str
    authorization: str = field(repr=False)  # a secret: never logged
    # Scrubs every secret of the provider from its answers (it may echo any of them).
    redactor: Redactor = field(default=NO_SECRETS, repr=False, compare=False)


@dataclass
class PassCounts:
    """What one reconciliation pass did."""

    asked: int = 0
    settled: int = 0
    rejected: int = 0
    pending: int = 0
    unpriced: int = 0


@dataclass(frozen=True)
class ReconcilerSettings:
    """How the reconciler paces itself."""

    interval_seconds: float = 10.0
    batch_size: int = 1000
    concurrency: int = 4
    timeout_seconds: float = 30.0
    backoff_max_seconds: float = 300.0
    unpriced_after_seconds: float = 3 * 86400.0
    reservation_ttl_seconds: float = 900.0


@dataclass
class CostApiRecord:
    """How one provider's cost API has answered this replica since it started (for operators).
    Failure reasons are our own words ("HTTP 500", "timeout"), never the provider's text."""

    has_cost_api: bool = False
    failures: int = 0
    consecutive_failures: int = 0
    last_failure_reason: str = ""
    last_failure_time: datetime | None = None
    last_attempt_time: datetime | None = None

    def note(self, failures: list[str], asked: bool) -> None:
        """One pass over the provider: whether it asked the cost API, and what failed."""
        now = datetime.now(UTC)
        if asked:
            self.last_attempt_time = now
        if failures:
            self.failures += len(failures)
            self.consecutive_failures += 1
            self.last_failure_reason, self.last_failure_time = failures[0], now
        elif asked:
            self.consecutive_failures = 0


class CostApiFailed(Exception):
    """A cost API call that changed nothing (the reason is the message)."""


# What a cost API's answer may take: a generous entry per id asked (ids are at most 1,024 characters,
# services/common/provider_api.py) and some room; more is a failed call, never parsed or logged.
ANSWER_BYTES_PER_ID = 2048
ANSWER_BYTES_SPARE = 64 * 1024


def answer_bytes_cap(ids: int) -> int:
    return ANSWER_BYTES_SPARE + ANSWER_BYTES_PER_ID * ids


class Reconciler:
    """Runs reconciliation passes, on an interval and on demand (one at a time)."""

    def __init__(
        self, db: Database, cost_apis: Callable[[], Awaitable[list[CostApi]]], settings: ReconcilerSettings
    ) -> None:
        self.db = db
        self.cost_apis = cost_apis
        self.settings = settings
        self.unpriced_total = 0  # requests aged into unpriced since start (a counter for operators)
        self.cost_api_records: dict[str, CostApiRecord] = {}  # provider -> its cost API's record
        self.last_pass_time: datetime | None = None
        self._lock = asyncio.Lock()
        self._retry_at: dict[str, float] = {}  # provider -> when its cost API is asked again
        # provider -> the request id a pass that ran out of time stopped after: the next pass goes on from
        # there (not from the oldest again, whose rejected rows would otherwise fill every pass)
        self._resume_after: dict[str, str] = {}
        self._backoff: dict[str, Backoff] = {}
        self._http: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Starts the background passes (the HTTP session opens at the first cost query)."""
        if self.settings.interval_seconds > 0:
            self._loop_task = asyncio.create_task(self._run_forever())

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_seconds)
            try:
                await self.run_pass(respect_backoff=True)
            except grpc.aio.AioRpcError as exc:  # the Registry is down or restarting: try again next interval
                log.warning("reconciliation pass skipped: registry unreachable", extra={"code": exc.code().name})
            except Exception:
                log.exception("reconciliation pass failed")

    async def run_pass(self, respect_backoff: bool = False) -> PassCounts:
        """One pass over every provider, then ageing and housekeeping."""
        async with self._lock:
            counts = PassCounts()
            apis = await self.cost_apis()
            self._note_cost_apis(apis)
            now = time.monotonic()
            due = [a for a in apis if not respect_backoff or self._retry_at.get(a.provider, 0.0) <= now]
            await asyncio.gather(*(self._reconcile_provider(api, counts) for api in due))
            counts.unpriced = await self._age_out()
            await self.db.run(lambda s: ledger.purge_expired_reservations(s, time.time()))
            counts.pending = await self.db.run(ledger.count_pending)
            self.last_pass_time = datetime.now(UTC)
            busy = counts.asked or counts.unpriced
            log.log(
                logging.INFO if busy else logging.DEBUG,
                "reconciliation pass",
                extra={"providers": len(due), **vars(counts)},
            )
            return counts

    def _note_cost_apis(self, apis: list[CostApi]) -> None:
        """Which providers have a cost API now (a provider that lost its own keeps its record)."""
        current = {api.provider for api in apis}
        for provider in current:
            self.cost_api_records.setdefault(provider, CostApiRecord())
        for provider, record in self.cost_api_records.items():
            record.has_cost_api = provider in current

    async def _age_out(self) -> int:
        age = self.settings.unpriced_after_seconds
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        reason = f"no valid cost from the provider's cost API within {age:g} s"
        aged = await self.db.run(lambda s: ledger.age_out_pending(s, cutoff, reason))
        if aged:
            self.unpriced_total += aged
            telemetry.RECORDS_UNPRICED.inc(aged)
            log.warning("requests aged into unpriced", extra={"count": aged, "unpriced_total": self.unpriced_total})
        return aged

    async def _reconcile_provider(self, api: CostApi, counts: PassCounts) -> None:
        """Pages through the provider's pending requests with bounded concurrency; stops at the first
        failure, and claims no new page after PROVIDER_PASS_SECONDS (the next pass goes on from there;
        passes start from the oldest again once one reached the end): a slow cost API with a large
        backlog must not hold the pass, and every other provider's, for hours."""
        slots = asyncio.Semaphore(max(1, self.settings.concurrency))
        failures: list[str] = []
        tasks: set[asyncio.Task] = set()
        after, asked = self._resume_after.pop(api.provider, ""), False
        stop_at = time.monotonic() + PROVIDER_PASS_SECONDS
        while True:
            await slots.acquire()
            if asked and not failures and time.monotonic() >= stop_at:  # the next pass resumes here
                self._resume_after[api.provider] = after
            done = failures or api.provider in self._resume_after
            page, until = ([], 0.0) if done else await self._claim(api.provider, after)
            if not page:
                slots.release()
                break
            after, asked = page[-1][0], True
            task = asyncio.create_task(self._settle_claimed(api, page, until, counts, failures))
            task.add_done_callback(lambda _: slots.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        self._record_outcome(api.provider, failures, asked)

    async def _claim(self, provider: str, after: str) -> tuple[list[tuple[str, str]], float]:
        """The next page of the provider's requests no reconciler holds, claimed; until when."""
        now = time.time()
        until = now + self.settings.timeout_seconds + CLAIM_MARGIN_SECONDS
        batch = self.settings.batch_size
        page = await self.db.run(lambda s: ledger.claim_page(s, provider, after, batch, now, until))
        return page, until

    def _record_outcome(self, provider: str, failures: list[str], asked: bool) -> None:
        self.cost_api_records.setdefault(provider, CostApiRecord(has_cost_api=True)).note(failures, asked)
        if not failures:
            self._backoff.pop(provider, None)
            self._retry_at.pop(provider, None)
            return
        telemetry.COST_API_FAILURES.inc(len(failures), labels=(provider,))
        initial = max(1.0, self.settings.interval_seconds)
        backoff = self._backoff.setdefault(provider, Backoff(initial, self.settings.backoff_max_seconds))
        wait = backoff.failed()
        self._retry_at[provider] = time.monotonic() + wait
        log.warning(
            "cost API failed; backing off",
            extra={"provider": provider, "reason": failures[0], "failures": backoff.failures, "retry_in_s": wait},
        )

    async def _settle_claimed(
        self, api: CostApi, page: list[tuple[str, str]], until: float, counts: PassCounts, failures: list[str]
    ) -> None:
        try:
            await self._settle_page(api, page, counts, failures)
        finally:
            await self.db.run(lambda s: ledger.release_claims(s, [request_id for request_id, _ in page], until))

    async def _settle_page(
        self, api: CostApi, page: list[tuple[str, str]], counts: PassCounts, failures: list[str]
    ) -> None:
        ours: dict[str, list[str]] = {}  # provider request id -> our request ids
        for request_id, provider_request_id in page:
            ours.setdefault(provider_request_id, []).append(request_id)
        try:
            answer = parse_cost_answer(await self._ask(api, list(ours)), ours, api.redactor)
        except (CostApiFailed, InvalidCostAnswer) as exc:
            failures.append(str(exc))
            return
        counts.asked += len(ours)
        for rejection in answer.rejected:
            log.warning(
                "cost rejected; the request stays pending",
                extra={
                    "provider": api.provider,
                    "provider_request_id": rejection.provider_request_id,
                    "request_ids": ours.get(rejection.provider_request_id, []),
                    "reason": rejection.reason,
                },
            )
        for unknown in answer.unknown:
            log.warning(
                "cost for a request id never asked; ignored",
                extra={"provider": api.provider, "provider_request_id": unknown},
            )
        costs = [(rid, cost) for prid, cost in answer.costs.items() for rid in ours[prid]]
        counts.rejected += len(answer.rejected)
        telemetry.RECORDS_REJECTED.inc(len(answer.rejected))
        settled = await self.db.run(lambda s: ledger.settle_costs(s, costs))
        telemetry.RECORDS_SETTLED.inc(settled)
        counts.settled += settled  # after the await: other pages update counts meanwhile

    async def _ask(self, api: CostApi, provider_request_ids: list[str]) -> bytes:
        """POSTs the ids to the cost API; raises CostApiFailed for anything but a 200."""
        # Imported at the first cost query, not at start: aiohttp costs ~0.1 CPU-s, and most Billing processes ask none.
        import aiohttp

        if self._http is None:
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=max(1, self.settings.concurrency))
            self._http = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        headers = {"Authorization": api.authorization, "Content-Type": "application/json"}
        body = orjson.dumps({"requestIds": provider_request_ids})
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            post = self._http.post(api.url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
            async with post as response:  # no redirect: the authorization goes to the cost API only
                if response.status != 200:
                    raise CostApiFailed(f"HTTP {response.status}")
                return await read_capped(response, answer_bytes_cap(len(provider_request_ids)))  # decompressed
        except AttemptFailed as exc:  # larger than the cap
            raise CostApiFailed(exc.reason) from None
        except TimeoutError as exc:
            raise CostApiFailed("timeout") from exc
        except aiohttp.ClientError as exc:
            raise CostApiFailed(f"connection error ({type(exc).__name__})") from exc
