"""The shared health records in the database (ModelHealthRow): live traffic the Routers
report and the probes' outcomes, each added to its provider model's record under a row lock
(services/common/health.py's `add`), the record's version raised by one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import orjson
from google.protobuf import json_format
from sqlalchemy import ColumnElement, Insert, Table, and_, delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.db import padded_chunks
from services.common.health import Figures, Traffic, add, figures_of, health_message
from services.registry.storage.tables import HealthReportRow, ModelHealthRow
from services.registry.storage.texts import bounded_reason

Key = tuple[str, str]  # (provider, provider model)
KEYS_PER_QUERY = 256  # provider models per statement
REPORT_ID_RETENTION = timedelta(minutes=15)  # longer than a Router retries a report


def change_key(keys: Iterable[Key]) -> str:
    """The change's key (ChangeRow.key): the records it touched, as JSON."""
    return orjson.dumps(sorted(set(keys))).decode()


def keys_of(change_key: str) -> list[Key]:
    return [(provider, model) for provider, model in orjson.loads(change_key)]


def _message(row: ModelHealthRow) -> internal_pb.ModelHealth:
    return json_format.Parse(row.record, internal_pb.ModelHealth())


def _matching(keys: Sequence[Key]) -> ColumnElement[bool]:
    return or_(*(and_(ModelHealthRow.provider == p, ModelHealthRow.provider_model == m) for p, m in keys))


def _rows(session: Session, keys: Sequence[Key], *, lock: bool = False) -> dict[Key, ModelHealthRow]:
    """The rows of these provider models that exist, read in chunks (SQLite parses a longer
    OR than about a thousand terms as an expression too deep)."""
    rows: dict[Key, ModelHealthRow] = {}
    for chunk in padded_chunks(keys, KEYS_PER_QUERY):
        query = select(ModelHealthRow).where(_matching(chunk))
        rows.update(
            {(r.provider, r.provider_model): r for r in session.exec(query.with_for_update() if lock else query)}
        )
    return rows


def _insert_ignoring_taken(session: Session, table: Table) -> Insert:
    """An INSERT that skips the rows whose keys are taken (by another writer, meanwhile)."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    return dialect.insert(table).on_conflict_do_nothing()


def _create_missing(session: Session, keys: Sequence[Key]) -> None:
    """Empty rows for the provider models that have none: inserted ignoring the ones another
    writer inserted meanwhile, so that the locking read that follows finds every row."""
    for chunk in padded_chunks(keys, KEYS_PER_QUERY):
        fresh = [{"provider": p, "provider_model": m, "version": 0, "record": "{}"} for p, m in chunk]
        session.execute(_insert_ignoring_taken(session, ModelHealthRow.__table__).values(fresh))


def _update(
    session: Session, keys: list[Key], change: Callable[[Key, Figures], Figures]
) -> list[internal_pb.ModelHealth]:
    """Replaces each record by change(key, record) (an empty one when there is none yet), the
    rows locked until the write commits; the new records."""
    _create_missing(session, keys)
    rows = _rows(session, keys, lock=True)
    records = []
    for key in keys:
        row = rows[key]
        figures = dataclasses.replace(change(key, figures_of(_message(row))), version=row.version + 1)
        message = health_message(*key, figures)
        row.version, row.record = figures.version, json_format.MessageToJson(message, indent=None)
        session.add(row)
        records.append(message)
    return records


def add_traffic(
    session: Session, reports: dict[Key, Traffic], start_time: float, minute: int
) -> list[internal_pb.ModelHealth]:
    """Adds a Router replica's report (`start_time`: since when it counted) to the records."""
    return _update(session, sorted(reports), lambda key, figures: add(figures, reports[key], start_time, minute))


def first_receipt(session: Session, request_id: str, now: datetime) -> bool:
    """Whether the report `request_id` is received for the first time (it is remembered from
    now on, in the write that applies it); ids older than REPORT_ID_RETENTION are forgotten."""
    session.execute(delete(HealthReportRow).where(HealthReportRow.receive_time < now - REPORT_ID_RETENTION))
    table = HealthReportRow.__table__
    inserted = _insert_ignoring_taken(session, table).values(request_id=request_id, receive_time=now)
    return session.execute(inserted.returning(table.c.request_id)).first() is not None  # rowcount: -1 on psycopg


def add_probes(session: Session, failures: dict[Key, str], unix_seconds: float) -> list[internal_pb.ModelHealth]:
    """Adds probe outcomes (the failure, "" for a pass) ended at `unix_seconds`."""

    def probed(key: Key, figures: Figures) -> Figures:
        failed = bool(failures[key])
        return dataclasses.replace(
            figures,
            probes=figures.probes + 1,
            probe_failures=figures.probe_failures + failed,
            last_probe_time=unix_seconds,
            last_probe_failure=bounded_reason(failures[key]),
        )

    return _update(session, sorted(failures), probed)


def records(session: Session, keys: list[Key]) -> list[internal_pb.ModelHealth]:
    """The records of these provider models, those that exist."""
    rows = _rows(session, keys)
    return [_message(rows[key]) for key in keys if key in rows]


def page(session: Session, after: Key | None, size: int) -> list[internal_pb.ModelHealth]:
    """Up to `size` records after `after`, by provider and provider model."""
    query = select(ModelHealthRow).order_by(ModelHealthRow.provider, ModelHealthRow.provider_model).limit(size)
    if after is not None:
        provider, model = after
        query = query.where(
            or_(
                ModelHealthRow.provider > provider,
                and_(ModelHealthRow.provider == provider, ModelHealthRow.provider_model > model),
            )
        )
    return [_message(row) for row in session.exec(query)]
