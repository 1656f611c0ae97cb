"""The shared health records in the database (ModelHealthRow): live traffic the Routers
report and the probes' outcomes, each added to its provider model's record under a row lock
(services/common/health.py's `add`), the record's version raised by one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import orjson
from google.protobuf import json_format
from sqlalchemy import and_, or_
from sqlmodel import Session, select
from switchboard.registry.v1 import internal_service_pb2 as internal_pb

from services.common.health import Figures, Traffic, add, figures_of, health_message
from services.registry.storage.tables import ModelHealthRow

Key = tuple[str, str]  # (provider, provider model)


def change_key(keys: Iterable[Key]) -> str:
    """The change's key (ChangeRow.key): the records it touched, as JSON."""
    return orjson.dumps(sorted(set(keys))).decode()


def keys_of(change_key: str) -> list[Key]:
    return [(provider, model) for provider, model in orjson.loads(change_key)]


def _message(row: ModelHealthRow) -> internal_pb.ModelHealth:
    return json_format.Parse(row.record, internal_pb.ModelHealth())


def _update(
    session: Session, keys: list[Key], change: Callable[[Key, Figures], Figures]
) -> list[internal_pb.ModelHealth]:
    """Replaces each record by change(key, record) (an empty one when there is none yet), the
    rows locked until the write commits; the new records."""
    wanted = or_(*(and_(ModelHealthRow.provider == p, ModelHealthRow.provider_model == m) for p, m in keys))
    rows = {
        (r.provider, r.provider_model): r for r in session.exec(select(ModelHealthRow).where(wanted).with_for_update())
    }
    records = []
    for key in keys:
        row = rows.get(key) or ModelHealthRow(provider=key[0], provider_model=key[1], version=0, record="{}")
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


def add_probes(session: Session, failures: dict[Key, str], unix_seconds: float) -> list[internal_pb.ModelHealth]:
    """Adds probe outcomes (the failure, "" for a pass) ended at `unix_seconds`."""

    def probed(key: Key, figures: Figures) -> Figures:
        failed = bool(failures[key])
        return dataclasses.replace(
            figures,
            probes=figures.probes + 1,
            probe_failures=figures.probe_failures + failed,
            last_probe_time=unix_seconds,
            last_probe_failure=failures[key],
        )

    return _update(session, sorted(failures), probed)


def records(session: Session, keys: list[Key]) -> list[internal_pb.ModelHealth]:
    """The records of these provider models, those that exist."""
    if not keys:
        return []
    wanted = or_(*(and_(ModelHealthRow.provider == p, ModelHealthRow.provider_model == m) for p, m in keys))
    return [_message(row) for row in session.exec(select(ModelHealthRow).where(wanted))]


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
