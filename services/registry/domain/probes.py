"""Health probes: a small request to each live mapping's provider at an interval.

A probe is a chat with max_tokens 1 (an image mapping: one 64x64 image; any other task: the
conformance check's sample of the task, services/registry/domain/task_checks.py), sent the way the
Router sends requests (services/common/provider_api.py) but outside it: no caller, no
reservation, no ledger record. After `failure_threshold` consecutive failures a live
mapping becomes "error" with the last failure's reason (the provider's secrets redacted, then
bounded: services/registry/storage/texts.py) and leaves routing
(services/registry/storage/index.py routes only live mappings); a probe that
passes makes it live again. Both changes are writes through RegistryState.write, so the
change feed carries them to every Router. Every outcome is added to the provider model's
shared health record too (services/registry/storage/health_records.py), next to the Routers' traffic.

Several Registry replicas share the probes' state in the database (queries.claim_probes):
each round, a replica claims the due mappings no other replica holds, with a lease that
outlives the probe's timeout, so one replica probes a mapping at a time and a killed
replica's leases run out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from sqlmodel import Session, select
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.errors import ApiError
from services.common.provider_api import CHAT_PATH, IMAGES_PATH, AttemptFailed, open_answer
from services.common.task_formats import TaskCall
from services.registry.domain.conformance import TEXT_TO_IMAGE, HttpClient, Target, target_of
from services.registry.domain.state import RegistryState
from services.registry.domain.task_checks import CHECKED_TASKS, sample_call
from services.registry.storage import health_records, queries
from services.registry.storage.index import ERROR, LIVE, Mapping
from services.registry.storage.tables import ProviderRow
from services.registry.storage.texts import bounded_reason, one_line

log = logging.getLogger(__name__)
LEASE_MARGIN_SECONDS = 5.0  # a lease outlives the probe's timeout by this: time to record it
PROBE_ANSWER_BYTES = 1024 * 1024
CHAT_PROBE = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
IMAGE_PROBE = {"prompt": "probe", "n": 1, "size": "64x64", "response_format": "url"}


@dataclass(frozen=True)
class ProbeSettings:
    """How often and how hard mappings are probed."""

    enabled: bool = True
    interval_seconds: float = 60.0
    failure_threshold: int = 3
    timeout_seconds: float = 10.0
    concurrency: int = 16


@dataclass(frozen=True)
class Outcome:
    """One probe: the mapping, its failure ("" when it passed) and its failures in a row."""

    mapping: Mapping
    failure: str
    failures: int


class Prober:
    """Runs probe rounds: on an interval in the background, or one at a time on demand."""

    def __init__(self, state: RegistryState, http: HttpClient, settings: ProbeSettings) -> None:
        self.state = state
        self.http = http
        self.settings = settings
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.settings.enabled:
            self._task = asyncio.create_task(self._run_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run_forever(self) -> None:
        # A round claims only what is due, so looking a few times per interval costs little
        # and keeps a mapping's probes close to the interval apart.
        pause = min(max(self.settings.interval_seconds / 4, 0.05), 5.0)
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("probe round failed; retrying")
            await asyncio.sleep(pause)

    async def round(self) -> list[Outcome]:
        """Claims the due mappings, probes them at once (bounded), records each outcome and
        moves a mapping to error or back to live when its outcomes say so."""
        owner = f"{self.state.origin}:{uuid.uuid4().hex}"
        now = time.time()
        until = now + self.settings.timeout_seconds + LEASE_MARGIN_SECONDS
        most = self.settings.concurrency * 4
        claimed = await self.state.db.run(lambda s: queries.claim_probes(s, owner, now, until, most))
        mappings = [m for i in claimed if (m := self.state.index.mappings.get(i)) is not None]
        targets = await self.state.db.run(lambda s: _targets(s, mappings))
        slots = asyncio.Semaphore(max(1, self.settings.concurrency))

        async def probe(mapping: Mapping) -> Outcome:
            async with slots:
                failure = await self._probe(mapping, targets.get(mapping.id))
            next_due = time.time() + self.settings.interval_seconds
            failures = await self.state.db.run(lambda s: queries.record_probe(s, mapping.id, owner, failure, next_due))
            return Outcome(mapping, failure, failures)

        outcomes = await asyncio.gather(*(probe(m) for m in mappings))
        for outcome in outcomes:
            await self._judge(outcome)
        await self._share(outcomes)  # after judging: the mappings' status does not wait on it
        return list(outcomes)

    async def _share(self, outcomes: list[Outcome]) -> None:
        """Adds the outcomes to the provider models' shared health records (lost leases left out)."""
        probed = {(o.mapping.provider, o.mapping.provider_model): o.failure for o in outcomes if o.failures >= 0}
        if probed:
            await self.state.write(
                lambda s: health_records.add_probes(s, probed, time.time()),
                internal_pb.CHANGE_KIND_HEALTH,
                health_records.change_key(probed),
            )

    async def _probe(self, mapping: Mapping, target: Target | None) -> str:
        """The probe's failure in words for the partner ("" when it passed)."""
        if target is None:
            return "the provider is gone"
        route = target.route
        payload, path = _probe_request(mapping)
        await self.http.start()
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                await open_answer(
                    self.http.session, route, payload, path, False, PROBE_ANSWER_BYTES, route.provider.headers
                )
            return ""
        except AttemptFailed as failed:
            reason = failed.reason
        except ApiError as error:
            reason = error.message
        except TimeoutError:
            reason = f"no answer within {self.settings.timeout_seconds:g} s"
        except self.http.errors as exc:
            reason = f"connection failed ({type(exc).__name__})"
        # one line, then redacted, then cut (a cut could leave part of a secret the redactor no longer knows)
        return bounded_reason(route.provider.redactor.text(one_line(reason))) or "failed"

    async def _judge(self, outcome: Outcome) -> None:
        """Live after enough failures in a row: error; error after a pass: live; error after
        another failure: error with the newer reason. Each only when the mapping is still in
        the status it was probed in (a partner's change meanwhile wins)."""
        mapping, failure = outcome.mapping, outcome.failure
        if outcome.failures < 0:  # the lease ran out meanwhile: another replica probes it now
            return
        if mapping.status == LIVE and failure and outcome.failures >= self.settings.failure_threshold:
            await self._set(mapping, LIVE, ERROR, failure)
            log.warning("mapping failing its probes: error", extra={"mapping": mapping.id, "reason": failure})
        elif mapping.status == ERROR and not failure:
            await self._set(mapping, ERROR, LIVE, "")
            log.info("mapping passing its probes again: live", extra={"mapping": mapping.id})
        elif mapping.status == ERROR and failure and failure != mapping.status_reason:
            await self._set(mapping, ERROR, ERROR, failure)

    async def _set(self, mapping: Mapping, was: str, status: str, reason: str) -> None:
        await self.state.write(
            lambda s: queries.set_probed_status(s, mapping.id, was, status, reason),
            internal_pb.CHANGE_KIND_MAPPING,
            mapping.provider,
        )


def _probe_request(mapping: Mapping) -> tuple[dict | TaskCall, str]:
    """What a probe sends: a one-token chat, one small image, or the task's conformance sample."""
    if mapping.task == TEXT_TO_IMAGE:
        return dict(IMAGE_PROBE), IMAGES_PATH
    if mapping.task in CHECKED_TASKS:
        return sample_call(mapping.task, mapping.provider_model), ""
    return dict(CHAT_PROBE), CHAT_PATH


def _targets(session: Session, mappings: list[Mapping]) -> dict[str, Target]:
    """Each mapping's provider as the Router calls it, keyed by mapping id."""
    providers = {m.provider for m in mappings}
    rows = {row.id: row for row in session.exec(select(ProviderRow).where(ProviderRow.id.in_(providers)))}
    return {m.id: target_of(rows[m.provider], m) for m in mappings if m.provider in rows}
