"""Database reads and writes of the Registry, and loading the in-memory index.

Functions here take a Session (they run on Database's worker thread); the
servicers call them through Database.run and update the index afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import delete, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from services.registry.index import Mapping, ProviderEntry, RegistryIndex, UserEntry
from services.registry.storage import MappingRow, MembershipRow, ModelRow, ProviderRow, TokenRow, UserRow

LOAD_BATCH = 50_000


def load_index(engine: Engine) -> RegistryIndex:
    """Everything resolution and authentication need, read once at start."""
    index = RegistryIndex()
    with engine.connect() as connection:
        models = connection.exec_driver_sql("SELECT id, pipeline_tag, tags, adapter_weights_path FROM models")
        while rows := models.fetchmany(LOAD_BATCH):
            for model_id, pipeline_tag, tags, weights_path in rows:
                index.put_model(model_id, pipeline_tag, orjson.loads(tags), weights_path)
        for row in connection.exec_driver_sql("SELECT id, org, default_rank FROM providers"):
            index.put_provider(ProviderEntry(*row))
    with Session(engine) as session:
        for row in session.exec(select(MappingRow).order_by(MappingRow.seq)):
            index.add_mapping(mapping_from_row(row))
        for user in session.exec(select(UserRow)):
            index.users[user.name] = UserEntry(preferred_providers=tuple(orjson.loads(user.preferred_providers)))
        for membership in session.exec(select(MembershipRow)):
            index.user(membership.user).memberships[membership.org] = membership.role
        for token in session.exec(select(TokenRow)):
            index.tokens[token.token_hash] = token.user
    return index


def mapping_from_row(row: MappingRow) -> Mapping:
    tags = tuple(row.tags_key.split(",")) if row.tags_key else ()
    return Mapping(
        id=row.id,
        seq=row.seq,
        provider=row.provider,
        type=row.type,
        task=row.task,
        hf_model=row.hf_model,
        tags=tags,
        provider_model=row.provider_model,
        status=row.status,
        adapter_type=row.adapter_type,
        create_time=row.create_time,
    )


def mapping_row(mapping: Mapping) -> MappingRow:
    return MappingRow(
        id=mapping.id,
        seq=mapping.seq,
        provider=mapping.provider,
        type=mapping.type,
        task=mapping.task,
        hf_model=mapping.hf_model,
        tags_key=mapping.tags_key,
        provider_model=mapping.provider_model,
        status=mapping.status,
        adapter_type=mapping.adapter_type,
        create_time=mapping.create_time,
    )


def insert(session: Session, *rows: object) -> None:
    """Adds rows and commits (IntegrityError on a duplicate)."""
    session.add_all(rows)
    session.commit()


def next_mapping_seq(session: Session) -> int:
    return (session.exec(select(func.max(MappingRow.seq))).one() or 0) + 1


def upsert_models(session: Session, models: Sequence[dict]) -> None:
    """INSERT ... ON CONFLICT (id) DO UPDATE for SQLite and PostgreSQL."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    statement = dialect.insert(ModelRow.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "pipeline_tag": statement.excluded.pipeline_tag,
            "tags": statement.excluded.tags,
            "adapter_weights_path": statement.excluded.adapter_weights_path,
        },
    )
    session.execute(statement, list(models))
    session.commit()


def set_mapping_status(session: Session, mapping_id: str, status: str) -> None:
    row = session.get(MappingRow, mapping_id)
    if row is not None:
        row.status = status
        session.add(row)
        session.commit()


def delete_rows(session: Session, model: type, *conditions: object) -> int:
    """Deletes matching rows and commits; the number deleted."""
    result = session.execute(delete(model).where(*conditions))
    session.commit()
    return result.rowcount


def delete_provider(session: Session, provider_id: str) -> bool:
    """The provider with its mappings and prices (explicitly: PostgreSQL and SQLite alike)."""
    session.execute(text("DELETE FROM mappings WHERE provider = :p"), {"p": provider_id})
    session.execute(text("DELETE FROM prices WHERE provider = :p"), {"p": provider_id})
    deleted = session.execute(delete(ProviderRow).where(ProviderRow.id == provider_id)).rowcount
    session.commit()
    return bool(deleted)
