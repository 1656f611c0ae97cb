"""Database reads and writes of the Registry, and loading the in-memory index.

Functions here take a Session (they run on Database's worker thread). The
write helpers only stage their rows (flush, no commit): RegistryState.write
commits them with their change record, in one transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.common.db import padded_chunks
from services.common.errors import ApiError, already_exists
from services.registry.index import CatalogModel, Mapping, ProviderEntry, RegistryIndex, UserEntry
from services.registry.storage import (
    AccountNameRow,
    CatalogImportRow,
    ChangeRow,
    MappingRow,
    MembershipRow,
    ModelAliasRow,
    ModelRow,
    OrgRow,
    ProviderRow,
    TokenRow,
    UserRow,
)

LOAD_BATCH = 50_000


def load_index(engine: Engine) -> RegistryIndex:
    """Everything resolution and authentication need, read once at start.

    Raw DB-API cursors, not ORM objects: a million catalog rows load several
    times faster this way, and the start of the Registry is bound by it.
    """
    index = RegistryIndex()
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        # read first: a change committed while loading is applied again later, harmlessly
        cursor.execute("SELECT COALESCE(MAX(revision), 0) FROM changes")
        index.loaded_revision = cursor.fetchone()[0]
        _load_catalog(index, cursor)
        cursor.execute("SELECT name, target FROM model_aliases")
        index.aliases.update(cursor.fetchall())
        cursor.execute("SELECT id, org, default_rank FROM providers")
        for row in cursor.fetchall():
            index.put_provider(ProviderEntry(*row))
        cursor.execute(f"SELECT {MAPPING_COLUMNS} FROM mappings ORDER BY seq")
        for row in cursor.fetchall():
            index.add_mapping(mapping_from_values(*row))
        cursor.execute("SELECT name, preferred_providers FROM users")
        for name, preferred in cursor.fetchall():
            index.users[name] = UserEntry(preferred_providers=tuple(orjson.loads(preferred)))
        cursor.execute('SELECT org, "user", role FROM memberships')
        for org, user, role in cursor.fetchall():
            index.user(user).memberships[org] = role
        cursor.execute('SELECT token_hash, "user" FROM tokens')
        index.tokens.update(cursor.fetchall())
    finally:
        connection.close()
    return index


def _load_catalog(index: RegistryIndex, cursor) -> None:
    catalog, intern, loads = index.catalog, sys.intern, orjson.loads
    cursor.execute("SELECT id, pipeline_tag, tags, adapter_weights_path FROM models")
    while rows := cursor.fetchmany(LOAD_BATCH):
        for model_id, pipeline_tag, tags, weights_path in rows:
            catalog[model_id] = CatalogModel(intern(pipeline_tag), tuple(map(intern, loads(tags))), weights_path)


MAPPING_COLUMNS = "id, seq, provider, type, task, hf_model, tags_key, provider_model, status, adapter_type, create_time"


def mapping_from_values(
    mapping_id: str,
    seq: int,
    provider: str,
    kind: str,
    task: str,
    hf_model: str,
    tags_key: str,
    provider_model: str,
    status: str,
    adapter_type: str,
    create_time: datetime | str,
) -> Mapping:
    if isinstance(create_time, str):  # SQLite hands back text
        create_time = datetime.fromisoformat(create_time)
    if create_time.tzinfo is None:
        create_time = create_time.replace(tzinfo=UTC)
    return Mapping(
        id=mapping_id,
        seq=seq,
        provider=provider,
        type=kind,
        task=task,
        hf_model=hf_model,
        tags=tuple(tags_key.split(",")) if tags_key else (),
        provider_model=provider_model,
        status=status,
        adapter_type=adapter_type,
        create_time=create_time,
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
    """Adds rows (IntegrityError on a duplicate)."""
    session.add_all(rows)
    session.flush()


def commit_change(session: Session, change: ChangeRow) -> int:
    """Records the change in the write's own transaction and commits both: the outbox
    the other replicas read (services/registry/replicas.py). The change's revision."""
    insert(session, change)
    session.commit()
    return change.revision


def create_account(session: Session, row: UserRow | OrgRow) -> None:
    """Inserts a user or org with its name in the shared name space, in one transaction.

    409 name_taken when a user or org has the name already (in any letter case): the
    name space's primary key decides, so two concurrent creations cannot both succeed.
    """
    kind = "user" if isinstance(row, UserRow) else "org"
    try:
        insert(session, AccountNameRow(folded=row.name.lower(), name=row.name, kind=kind), row)
    except IntegrityError:
        session.rollback()
        holder = session.get(AccountNameRow, row.name.lower())
        taken_by = f"the {holder.kind} {holder.name!r}" if holder else "another account"
        message = f"the name {row.name!r} is taken by {taken_by}: users and orgs share one name space"
        raise already_exists("NAME_TAKEN", message, "name") from None


def import_models(session: Session, models: Sequence[dict]) -> None:
    """Upserts a catalog batch and records the import (time and size) in the same transaction."""
    upsert_models(session, models)
    insert(session, CatalogImportRow(model_count=len(models)))


def last_catalog_import(session: Session) -> CatalogImportRow | None:
    return session.exec(select(CatalogImportRow).order_by(CatalogImportRow.id.desc()).limit(1)).first()


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


def set_mapping_status(session: Session, mapping_id: str, status: str) -> None:
    row = session.get(MappingRow, mapping_id)
    if row is not None:
        row.status = status
        insert(session, row)


def delete_rows(session: Session, model: type, *conditions: object) -> int:
    """Deletes matching rows; the number deleted."""
    return session.execute(delete(model).where(*conditions)).rowcount


def delete_existing(session: Session, model: type, conditions: Sequence[object], missing: ApiError) -> None:
    """Deletes the matching rows; `missing` is raised when there were none."""
    if not delete_rows(session, model, *conditions):
        raise missing


def delete_provider(session: Session, provider_id: str) -> bool:
    """The provider with its mappings and prices (explicitly: PostgreSQL and SQLite alike)."""
    session.execute(text("DELETE FROM mappings WHERE provider = :p"), {"p": provider_id})
    session.execute(text("DELETE FROM prices WHERE provider = :p"), {"p": provider_id})
    return bool(delete_rows(session, ProviderRow, ProviderRow.id == provider_id))


# What another replica's change needs re-read (see services/registry/replicas.py).


def changes_since(session: Session, revision: int, limit: int = 1000) -> list[tuple[int, str, int, str]]:
    query = select(ChangeRow.revision, ChangeRow.origin, ChangeRow.kind, ChangeRow.key)
    return list(session.exec(query.where(ChangeRow.revision > revision).order_by(ChangeRow.revision).limit(limit)))


def prune_changes(session: Session, before: datetime) -> int:
    pruned = delete_rows(session, ChangeRow, ChangeRow.create_time < before)
    session.commit()
    return pruned


def alias_target(session: Session, name: str) -> str | None:
    """The alias's hub model id; None when the alias does not exist (any more)."""
    row = session.get(ModelAliasRow, name)
    return row.target if row else None


def provider_entry(session: Session, provider_id: str) -> ProviderEntry | None:
    row = session.get(ProviderRow, provider_id)
    return ProviderEntry(row.id, row.org, row.default_rank) if row else None


def provider_mappings(session: Session, provider_id: str) -> list[Mapping]:
    query = text(f"SELECT {MAPPING_COLUMNS} FROM mappings WHERE provider = :p ORDER BY seq")
    return [mapping_from_values(*row) for row in session.execute(query, {"p": provider_id})]


def user_identity(session: Session, user: str) -> tuple[UserEntry | None, list[str]]:
    """The user's roles and preference (None when gone), and their token digests."""
    row = session.get(UserRow, user)
    if row is None:
        return None, []
    entry = UserEntry(preferred_providers=tuple(orjson.loads(row.preferred_providers)))
    for membership in session.exec(select(MembershipRow).where(MembershipRow.user == user)):
        entry.memberships[membership.org] = membership.role
    return entry, list(session.exec(select(TokenRow.token_hash).where(TokenRow.user == user)))


def catalog_create_times(session: Session, model_ids: list[str]) -> dict[str, datetime]:
    """When each of the models entered the catalog (unknown ids are left out)."""
    times: dict[str, datetime] = {}
    for chunk in padded_chunks(model_ids):
        times.update(session.exec(select(ModelRow.id, ModelRow.create_time).where(ModelRow.id.in_(chunk))).all())
    return times


def catalog_rows(session: Session, model_ids: list[str]) -> list[tuple[str, str, list[str], str]]:
    rows = []
    for chunk in padded_chunks(model_ids):
        rows += session.exec(select(ModelRow).where(ModelRow.id.in_(chunk)))
    return [(m.id, m.pipeline_tag, orjson.loads(m.tags), m.adapter_weights_path) for m in rows]


def page_after(session: Session, key: Any, after: str, size: int) -> list:
    """A keyset page: up to size + 1 rows of key's table whose key sorts after `after`, in key order
    (the extra row tells the caller that a next page exists)."""
    query = select(key.class_).where(key > after).order_by(key).limit(size + 1)
    return list(session.exec(query))
