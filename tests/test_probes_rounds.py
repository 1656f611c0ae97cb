"""Health probes driven round by round, in process, against the reference provider: a live
mapping becomes error after exactly N failed probes (with the reason, through the one write
path and its change feed), stays out of routing, returns to live on the next pass; a
partner's change wins. And the probes' leases on SQLite and PostgreSQL: of replicas claiming
at once, each mapping goes to one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from helpers.postgres import postgres_database
from sqlmodel import Session
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.common.secrets import use_secrets_key
from services.reference_provider.app import Knobs, State, create_app
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.conformance import HttpClient
from services.registry.domain.probes import Prober, ProbeSettings
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import queries
from services.registry.storage.index import ERROR, LIVE, STAGING, Exclusion
from services.registry.storage.tables import MappingRow, ModelRow, ProbeStateRow, ProviderRow

API_KEY = "sk-probe-" + uuid.uuid4().hex
THRESHOLD = 3
MAPPINGS = 30
CLAIMERS = 6
MOST = 7


def registry_database(url: str) -> Database:
    use_secrets_key(Fernet.generate_key())
    migrate(url, MIGRATIONS)
    return Database(url)


def add_provider(db: Database, base_url: str, mappings: int = 1) -> tuple[str, list[str]]:
    """A provider with live chat mappings of as many models; (provider id, mapping ids)."""
    provider = f"p-{uuid.uuid4().hex[:8]}"
    ids = [uuid.uuid4().hex[:24] for _ in range(mappings)]

    def insert(session: Session) -> None:
        session.add(ProviderRow(id=provider, org="org", base_url=base_url, api_key=API_KEY, tasks='["conversational"]'))
        session.flush()  # before the mappings that refer to it
        for seq, mapping_id in enumerate(ids, 1):
            model = f"ns/{provider}-{seq}"
            session.add(ModelRow(id=model, pipeline_tag="text-generation", tags='["conversational"]'))
            session.add(
                MappingRow(
                    id=mapping_id, seq=seq, provider=provider, type="model", task="conversational",
                    hf_model=model, provider_model="m", status=LIVE,
                )
            )  # fmt: skip
        session.commit()

    db.read(insert)
    return provider, ids


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[RegistryState, Prober, State, str]]:
    db = registry_database(f"sqlite:///{tmp_path / 'registry.db'}")
    provider_state = State(Knobs(), API_KEY)
    server = TestServer(create_app(provider_state))
    await server.start_server()
    _, (mapping_id,) = add_provider(db, str(server.make_url("")))
    index = await db.run(lambda s: queries.load_index(s.get_bind()))
    state = RegistryState(db, index, ChangeFeed(), "admin-token")
    http = HttpClient()
    await http.start()
    settings = ProbeSettings(interval_seconds=0.0, failure_threshold=THRESHOLD, timeout_seconds=5.0)
    try:
        yield state, Prober(state, http, settings), provider_state, mapping_id
    finally:
        await http.close()
        await server.close()
        db.close()


async def test_n_failed_probes_make_a_mapping_error_and_one_pass_makes_it_live(world) -> None:
    state, prober, provider, mapping_id = world
    mapping = state.index.mappings[mapping_id]
    model = mapping.hf_model
    assert [(o.failure, o.failures) for o in await prober.round()] == [("", 0)]
    provider.knobs.fail_rate, provider.knobs.fail_status = 1.0, 503
    revision = state.feed.revision
    for failures in range(1, THRESHOLD):
        assert [(o.failure, o.failures) for o in await prober.round()] == [("HTTP 503", failures)]
        assert state.index.mappings[mapping_id].status == LIVE and state.feed.revision == revision
    assert [o.failures for o in await prober.round()] == [THRESHOLD]
    failing = state.index.mappings[mapping_id]
    assert (failing.status, failing.status_reason) == (ERROR, "HTTP 503")
    assert state.feed.revision == revision + 1  # the change went through the one write path
    resolution = state.index.resolve(model, "", "conversational")
    assert resolution.candidates == [] and [c.status for c in resolution.failing] == [ERROR]
    assert resolution.exclusions == [Exclusion(failing.provider, "failing its health probes (HTTP 503)", ERROR)]

    await prober.round()  # still failing, same reason: nothing to write
    assert state.feed.revision == revision + 1
    provider.knobs.fail_rate = 0.0
    assert [(o.failure, o.failures) for o in await prober.round()] == [("", 0)]
    back = state.index.mappings[mapping_id]
    assert (back.status, back.status_reason) == (LIVE, "")
    assert [c.provider for c in state.index.resolve(model, "", "conversational").candidates] == [back.provider]


async def test_a_partners_status_change_wins_and_staging_is_not_probed(world) -> None:
    state, prober, provider, mapping_id = world
    provider.knobs.fail_rate, provider.knobs.fail_status = 1.0, 500
    for _ in range(THRESHOLD):
        await prober.round()
    mapping = state.index.mappings[mapping_id]
    assert mapping.status == ERROR
    await state.write(
        lambda s: queries.set_mapping_status(s, mapping_id, STAGING), internal_pb.CHANGE_KIND_MAPPING, mapping.provider
    )
    staged = state.index.mappings[mapping_id]
    assert (staged.status, staged.status_reason) == (STAGING, "")
    assert await prober.round() == []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def claims_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        database = registry_database(f"sqlite:///{tmp_path_factory.mktemp('probes') / 'registry.db'}")
        yield database
        database.close()
        return
    with postgres_database() as url:
        database = registry_database(url)
        yield database
        database.close()


async def claim_all(db: Database, now: float, until: float) -> list[str]:
    """Several replicas claim at once, then one claims until nothing is left; every claim."""

    async def claim() -> list[str]:
        owner = uuid.uuid4().hex
        return await db.run(lambda s: queries.claim_probes(s, owner, now, until, MOST))

    claims = [i for batch in await asyncio.gather(*(claim() for _ in range(CLAIMERS))) for i in batch]
    while batch := await claim():
        claims += batch
    return claims


async def test_replicas_claiming_at_once_never_probe_one_mapping_twice(claims_db: Database) -> None:
    _, ids = add_provider(claims_db, "http://127.0.0.1:9", MAPPINGS)
    now = time.time() + 10_000  # after every earlier test's leases and due times
    claims = [i for i in await claim_all(claims_db, now, now + 60) if i in ids]
    assert sorted(claims) == sorted(ids)  # each exactly once
    assert [i for i in await claim_all(claims_db, now + 59, now + 120) if i in ids] == []  # leases held

    owner = uuid.uuid4().hex
    (first,) = await claims_db.run(lambda s: queries.claim_probes(s, owner, now + 61, now + 120, 1))
    assert await claims_db.run(lambda s: queries.record_probe(s, first, "not-the-owner", "x", now)) == -1
    assert await claims_db.run(lambda s: queries.record_probe(s, first, owner, "HTTP 503", now + 1_000)) == 1
    later = [i for i in await claim_all(claims_db, now + 200, now + 260) if i in ids]
    assert sorted(later) == sorted(set(ids) - {first})  # leases ran out; the probed one is not due


async def test_a_provider_with_many_due_mappings_does_not_fill_the_rounds(claims_db: Database) -> None:
    """Each provider's due mappings in turn: a round of MOST takes the other provider's (due later)
    too, not only the first MOST of the one with many."""
    _, many = add_provider(claims_db, "http://127.0.0.1:9", MAPPINGS)
    _, few = add_provider(claims_db, "http://127.0.0.1:9", 2)
    now = time.time() + 20_000  # after every earlier test's leases and due times
    await claims_db.run(lambda s: queries.claim_probes(s, "nobody", now, now, 0))  # their probe states, due at 0

    def due_later(session: Session) -> None:  # the few are due after every one of the many
        for mapping_id in few:
            state = session.get(ProbeStateRow, mapping_id)
            state.next_due = now - 1
            session.add(state)
        session.commit()

    await claims_db.run(due_later)
    owner = uuid.uuid4().hex
    claimed = await claims_db.run(lambda s: queries.claim_probes(s, owner, now, now + 60, MOST))
    assert set(few) <= set(claimed) and set(claimed) & set(many)
