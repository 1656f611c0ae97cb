"""A health probe's failure reason is text from the partner's upstream (its error message): it is
stored bounded, where it is recorded, on SQLite and PostgreSQL alike: at most MAX_REASON
characters, cut on a character with a "…", on one line (no control character: JSON writes each in
6 bytes and PostgreSQL cannot store NUL), the same in the mapping, its probe state and its health
record. Rounds are driven in process against an upstream that answers a hostile error."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from google.protobuf import json_format
from helpers.postgres import postgres_database
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import Database, migrate
from services.common.secrets import use_secrets_key
from services.registry.domain.changes import ChangeFeed
from services.registry.domain.conformance import HttpClient
from services.registry.domain.probes import Prober, ProbeSettings
from services.registry.domain.state import RegistryState
from services.registry.server import MIGRATIONS
from services.registry.storage import queries
from services.registry.storage.index import ERROR, LIVE
from services.registry.storage.tables import MappingRow, ModelHealthRow, ModelRow, ProbeStateRow, ProviderRow
from services.registry.storage.texts import CUT_MARK, MAX_REASON, UNSAFE, bounded_reason

API_KEY = "sk-reasons-" + uuid.uuid4().hex
THRESHOLD = 2
# What a hostile upstream says (3,000 characters, within the error body the Router's code reads):
# NUL and other control characters, line breaks, markup JSON escapes, characters outside the BMP.
HOSTILE = "\x00bad\r\nthing\x1b[31m<script>\u2028\x85" + "\U000e0041😀é" * 1_000


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    use_secrets_key(Fernet.generate_key())
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        migrate(url, MIGRATIONS)
        yield (db := Database(url))
        db.close()
        return
    with postgres_database() as url:
        migrate(url, MIGRATIONS)
        yield (db := Database(url))
        db.close()


async def refusing(message: str) -> AsyncIterator[str]:
    """A provider that answers every call with a 418 whose error message is `message`."""

    async def refuse(_: web.Request) -> web.Response:
        body = json.dumps({"error": {"message": message}}, ensure_ascii=False)
        return web.Response(text=body, status=418, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async for url in refusing(HOSTILE):
        yield url


SPACED_KEY = "sk reasons " + uuid.uuid4().hex  # a key may hold a space


@pytest.fixture
async def spaced_key_upstream() -> AsyncIterator[str]:
    async for url in refusing("your key " + SPACED_KEY.replace(" ", "\x00") + " is wrong"):  # NUL for space
        yield url


def add_mapping(db: Database, base_url: str, api_key: str = API_KEY) -> tuple[str, str]:
    """A provider with one live chat mapping; (provider id, mapping id)."""
    provider, mapping_id = f"p-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:24]

    def insert(session: Session) -> None:
        session.add(ProviderRow(id=provider, org="org", base_url=base_url, api_key=api_key, tasks='["conversational"]'))
        session.add(ModelRow(id=f"ns/{provider}", pipeline_tag="text-generation", tags='["conversational"]'))
        session.flush()  # before the mapping that refers to them
        session.add(
            MappingRow(id=mapping_id, seq=1, provider=provider, type="model", task="conversational",
                       hf_model=f"ns/{provider}", provider_model="m", status=LIVE)
        )  # fmt: skip
        session.commit()

    db.read(insert)
    return provider, mapping_id


def stored(session: Session, provider: str, mapping_id: str) -> tuple[str, str, str]:
    """The reason as the mapping, its probe state and its health record keep it."""
    health = json_format.Parse(session.get(ModelHealthRow, (provider, "m")).record, internal_pb.ModelHealth())
    last_failure = session.get(ProbeStateRow, mapping_id).last_failure
    return session.get(MappingRow, mapping_id).status_reason, last_failure, health.last_probe_failure


async def test_a_hostile_reason_is_stored_bounded_everywhere(database: Database, upstream: str) -> None:
    provider, mapping_id = add_mapping(database, upstream)
    index = await database.run(lambda s: queries.load_index(s.get_bind()))
    state = RegistryState(database, index, ChangeFeed(), "admin-token")
    http = HttpClient()
    prober = Prober(state, http, ProbeSettings(interval_seconds=0.0, failure_threshold=THRESHOLD, timeout_seconds=5))
    try:
        outcomes = [outcome for _ in range(THRESHOLD + 1) for outcome in await prober.round()]
    finally:
        await http.close()

    reason = outcomes[0].failure
    assert reason.startswith(f"provider {provider} answered HTTP 418:  bad  thing [31m<script>")
    assert len(reason) == MAX_REASON and reason.endswith(CUT_MARK) and not UNSAFE.search(reason)
    assert [o.failure for o in outcomes] == [reason] * (THRESHOLD + 1)
    mapping = state.index.mappings[mapping_id]
    assert (mapping.status, mapping.status_reason) == (ERROR, reason)
    assert await database.run(lambda s: stored(s, provider, mapping_id)) == (reason, reason, reason)
    assert state.feed.revision == 1  # one mapping write (to error): the same reason again writes nothing


@given(st.text(max_size=400), st.integers(min_value=1, max_value=300))
def test_a_bounded_reason_is_a_clean_prefix(text: str, most: int) -> None:
    reason = bounded_reason(text, most)
    assert len(reason) <= most and not UNSAFE.search(reason)
    assert bounded_reason(reason, most) == reason  # stored again unchanged
    cleaned = UNSAFE.sub(" ", text)
    assert reason == cleaned if len(cleaned) <= most else reason == cleaned[: most - 1] + CUT_MARK
    reason.encode()  # UTF-8 can hold it (no lone surrogate)


async def test_a_key_written_with_a_control_character_for_its_space_is_redacted(
    database: Database, spaced_key_upstream: str
) -> None:
    """The reason is made one line before it is redacted: the other way round, a NUL written in
    place of the key's space hid it from the redactor and then became that space."""
    add_mapping(database, spaced_key_upstream, SPACED_KEY)
    index = await database.run(lambda s: queries.load_index(s.get_bind()))
    state = RegistryState(database, index, ChangeFeed(), "admin-token")
    http = HttpClient()
    prober = Prober(state, http, ProbeSettings(interval_seconds=0.0, failure_threshold=THRESHOLD, timeout_seconds=5))
    try:
        (outcome,) = await prober.round()
    finally:
        await http.close()
    assert "[redacted]" in outcome.failure and SPACED_KEY[3:] not in outcome.failure
