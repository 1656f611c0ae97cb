"""Database reads and writes of the Registry, and loading the in-memory index.

Functions here take a Session (they run on Database's worker thread). The
write helpers only stage their rows (flush, no commit): RegistryState.write
commits them with their change record, in one transaction.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, literal, text, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.common.accounts import limits_beyond_expiry
from services.common.db import padded_chunks
from services.common.errors import ApiError, already_exists
from services.common.tasks import SERVED_TASKS
from services.registry.storage.index import (
    ERROR,
    Capabilities,
    CatalogModel,
    Conformance,
    IndexedProvider,
    Mapping,
    RegistryIndex,
    TokenTerms,
    UserEntry,
)
from services.registry.storage.tables import (
    AccountNameRow,
    CatalogImportRow,
    ChangeRow,
    ConformanceReportRow,
    MappingRow,
    MembershipRow,
    ModelAliasRow,
    ModelRow,
    OrgRow,
    PriceRow,
    ProbeStateRow,
    ProviderRow,
    TokenRow,
    UserRow,
)
from services.registry.storage.texts import bounded_reason

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
            index.put_provider(IndexedProvider(*row))
        cursor.execute(f"{MAPPINGS_QUERY} ORDER BY m.seq")
        for row in cursor.fetchall():
            index.add_mapping(mapping_from_values(*row))
        cursor.execute("SELECT name, preferred_providers FROM users")
        for name, preferred in cursor.fetchall():
            index.users[name] = UserEntry(preferred_providers=tuple(orjson.loads(preferred)))
        cursor.execute('SELECT org, "user", role FROM memberships')
        for org, user, role in cursor.fetchall():
            index.user(user).memberships[org] = role
        cursor.execute('SELECT token_hash, "user", limits, account FROM tokens')
        rows = cursor.fetchall()
        index.add_tokens((digest, user, token_terms(limits, account)) for digest, user, limits, account in rows)
    finally:
        connection.close()
    return index


def _load_catalog(index: RegistryIndex, cursor) -> None:
    catalog, intern, loads = index.catalog, sys.intern, orjson.loads
    cursor.execute("SELECT id, pipeline_tag, tags, adapter_weights_path FROM models")
    while rows := cursor.fetchmany(LOAD_BATCH):
        for model_id, pipeline_tag, tags, weights_path in rows:
            catalog[model_id] = CatalogModel(intern(pipeline_tag), tuple(map(intern, loads(tags))), weights_path)


# Every mapping with its latest conformance report in brief (a LEFT JOIN: most have none).
MAPPINGS_QUERY = (
    "SELECT m.id, m.seq, m.provider, m.type, m.task, m.hf_model, m.tags_key, m.provider_model, m.status,"
    " m.adapter_type, m.create_time, m.supports_tools, m.supports_structured_output, m.context_length,"
    " m.status_reason, r.check_time, r.passed, r.passed_checks, r.failed_checks,"
    " r.skipped_checks, r.supports_tools, r.supports_structured_output"
    " FROM mappings m LEFT JOIN conformance_reports r ON r.mapping_id = m.id"
)


def _utc(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
    supports_tools: bool | int | None = None,
    supports_structured_output: bool | int | None = None,
    context_length: int | None = None,
    status_reason: str = "",
    check_time: datetime | str | None = None,
    *summary: Any,
) -> Mapping:
    conformance = None
    if check_time is not None:
        passed, passed_checks, failed_checks, skipped_checks, tools, structured = summary
        conformance = Conformance(
            _utc(check_time), bool(passed), passed_checks, failed_checks, skipped_checks, bool(tools), bool(structured)
        )
    if task not in SERVED_TASKS:  # stored before unserved tasks were refused: listed, never routed nor probed
        status, status_reason = ERROR, unserved_reason(task)
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
        create_time=_utc(create_time),
        status_reason=status_reason,
        conformance=conformance,
        capabilities=Capabilities(_flag(supports_tools), _flag(supports_structured_output), context_length),
    )


def unserved_reason(task: str) -> str:
    return f"task {task!r} is not served by Switchboard: this mapping is not routed; delete it"


def _flag(value: bool | int | None) -> bool | None:
    """A nullable boolean column's value (SQLite hands back 0 or 1)."""
    return None if value is None else bool(value)


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
        status_reason=mapping.status_reason,
        supports_tools=mapping.capabilities.supports_tools,
        supports_structured_output=mapping.capabilities.supports_structured_output,
        context_length=mapping.capabilities.context_length,
    )


def insert(session: Session, *rows: object) -> None:
    """Adds rows (IntegrityError on a duplicate)."""
    session.add_all(rows)
    session.flush()


def commit_change(session: Session, change: ChangeRow) -> int:
    """Records the change in the write's own transaction and commits both: the outbox
    the other replicas read (services/registry/domain/replicas.py). The change's revision."""
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
    """The next mapping's place in the typed listing's order. On PostgreSQL the table is locked
    against other writers until the transaction ends: two creates (threads, replicas) must not
    both read the same max and share a seq, which would make a page that ends on one skip the other.
    (SQLite's writes are one at a time already.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE mappings IN SHARE ROW EXCLUSIVE MODE"))
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
    """A partner's status change: the probes' reason for an error goes with the error."""
    row = session.get(MappingRow, mapping_id)
    if row is not None:
        row.status, row.status_reason = status, ""
        insert(session, row)


def set_probed_status(session: Session, mapping_id: str, was: str, status: str, reason: str) -> bool:
    """The probes' verdict, only on a mapping still in the status they judged (a partner's
    change meanwhile wins); whether it applied."""
    statement = (
        update(MappingRow)
        .where(MappingRow.id == mapping_id, MappingRow.status == was)
        .values(status=status, status_reason=bounded_reason(reason))
    )
    return session.execute(statement).rowcount == 1


def save_report(session: Session, row: ConformanceReportRow) -> None:
    """Replaces the mapping's latest conformance report."""
    session.merge(row)
    session.flush()


# The health probes' shared state (services/registry/domain/probes.py): a lease per mapping, so that
# of several Registry replicas one probes a mapping at a time, and a shared failure count.
PROBED = ("live", "error")
# Every served task is probed (services/registry/domain/probes.py); a mapping of a task not served never
# is (its listing says why: unserved_reason).
PROBED_TASKS = tuple(SERVED_TASKS)


def claim_probes(session: Session, owner: str, now: float, until: float, most: int) -> list[str]:
    """Claims up to `most` live or failing mappings of served tasks whose probe is due and whose
    lease is free, for `owner` until `until` (unix seconds); their ids. A conditional UPDATE: of replicas
    claiming at once, each row goes to one (SQLite writes one at a time; PostgreSQL re-checks
    the conditions on the row another transaction just claimed)."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    probed = (MappingRow.status.in_(PROBED), MappingRow.task.in_(PROBED_TASKS))
    fresh = (literal(0), literal(""), literal(0.0), literal(""), literal(0.0))
    missing = core_select(MappingRow.id, *fresh).where(*probed)
    columns = ["mapping_id", "failures", "last_failure", "next_due", "lease_owner", "lease_until"]
    new_states = dialect.insert(ProbeStateRow.__table__).from_select(columns, missing)
    session.execute(new_states.on_conflict_do_nothing(index_elements=["mapping_id"]))
    free = (ProbeStateRow.next_due <= now, ProbeStateRow.lease_until <= now)
    # Each provider's due mappings in turn (its first, every provider's, then its second...): a
    # provider with thousands due (and slow to answer) must not fill every round and hold other
    # providers' probes (and their way to error) back for hours.
    turn = func.row_number().over(partition_by=MappingRow.provider, order_by=ProbeStateRow.next_due)
    ranked = (
        core_select(ProbeStateRow.mapping_id, ProbeStateRow.next_due, turn.label("turn"))
        .join(MappingRow, MappingRow.id == ProbeStateRow.mapping_id)
        .where(*probed, *free)
        .subquery()
    )
    due = core_select(ranked.c.mapping_id).order_by(ranked.c.turn, ranked.c.next_due).limit(most)
    claim = update(ProbeStateRow).where(ProbeStateRow.mapping_id.in_(due), *free)
    session.execute(claim.values(lease_owner=owner, lease_until=until))
    claimed = list(session.exec(select(ProbeStateRow.mapping_id).where(ProbeStateRow.lease_owner == owner)))
    session.commit()
    return claimed


def record_probe(session: Session, mapping_id: str, owner: str, failure: str, next_due: float) -> int:
    """A probe's outcome ("" for a pass) under the owner's lease, which it releases; the
    mapping's consecutive failures now (-1 when the lease was lost or the mapping deleted)."""
    row = session.get(ProbeStateRow, mapping_id)
    if row is None or row.lease_owner != owner:
        return -1
    row.failures = row.failures + 1 if failure else 0
    row.last_failure, row.next_due, row.lease_owner, row.lease_until = bounded_reason(failure), next_due, "", 0.0
    session.add(row)
    session.commit()
    return row.failures


def report_of(session: Session, mapping_id: str) -> str | None:
    """The mapping's latest report as stored (JSON), None before its first check."""
    row = session.get(ConformanceReportRow, mapping_id)
    return row.report if row else None


def set_mapping_capabilities(session: Session, mapping_id: str, capabilities: Capabilities) -> None:
    row = session.get(MappingRow, mapping_id)
    if row is not None:
        row.supports_tools = capabilities.supports_tools
        row.supports_structured_output = capabilities.supports_structured_output
        row.context_length = capabilities.context_length
        insert(session, row)


def delete_rows(session: Session, model: type, *conditions: object) -> int:
    """Deletes matching rows; the number deleted."""
    return session.execute(delete(model).where(*conditions)).rowcount


def delete_existing(session: Session, model: type, conditions: Sequence[object], missing: ApiError) -> None:
    """Deletes the matching rows; `missing` is raised when there were none."""
    if not delete_rows(session, model, *conditions):
        raise missing


def delete_provider(session: Session, provider_id: str) -> bool:
    """The provider with its mappings, prices and health records (explicitly: PostgreSQL and
    SQLite alike; a provider later made with its id starts afresh)."""
    session.execute(text("DELETE FROM mappings WHERE provider = :p"), {"p": provider_id})
    session.execute(text("DELETE FROM model_health WHERE provider = :p"), {"p": provider_id})
    session.execute(text("DELETE FROM prices WHERE provider = :p"), {"p": provider_id})
    return bool(delete_rows(session, ProviderRow, ProviderRow.id == provider_id))


# What another replica's change needs re-read (see services/registry/domain/replicas.py).


# What the change log holds past a revision (`since`), in one indexed scalar read: how many changes
# and the sum of their revisions. A change committed late below the newest revision seen (see
# services/registry/domain/replicas.py) or pruned changes it, so an equal answer means nothing new.
CHANGE_LOG_MARK = core_select(func.count(), func.sum(ChangeRow.revision)).where(ChangeRow.revision > bindparam("since"))


def changes_since(session: Session, revision: int, limit: int = 1000) -> list[tuple[int, str, int, str]]:
    query = select(ChangeRow.revision, ChangeRow.origin, ChangeRow.kind, ChangeRow.key)
    return list(session.exec(query.where(ChangeRow.revision > revision).order_by(ChangeRow.revision).limit(limit)))


def prune_changes(session: Session, before: datetime) -> int:
    """Deletes the changes made before `before`, except the newest: SQLite numbers a new row one past
    the largest kept, and a number handed out again would pass for a change other replicas applied."""
    newest = core_select(func.max(ChangeRow.revision)).scalar_subquery()
    pruned = delete_rows(session, ChangeRow, ChangeRow.create_time < before, ChangeRow.revision < newest)
    session.commit()
    return pruned


def alias_target(session: Session, name: str) -> str | None:
    """The alias's hub model id; None when the alias does not exist (any more)."""
    row = session.get(ModelAliasRow, name)
    return row.target if row else None


def indexed_provider(session: Session, provider_id: str) -> IndexedProvider | None:
    row = session.get(ProviderRow, provider_id)
    return IndexedProvider(row.id, row.org, row.default_rank) if row else None


def provider_mappings(session: Session, provider_id: str) -> list[Mapping]:
    query = text(f"{MAPPINGS_QUERY} WHERE m.provider = :p ORDER BY m.seq")
    return [mapping_from_values(*row) for row in session.execute(query, {"p": provider_id})]


def user_identity(session: Session, user: str) -> tuple[UserEntry | None, dict[str, TokenTerms]]:
    """The user's roles and preference (None when gone), and their tokens: digest -> terms."""
    row = session.get(UserRow, user)
    if row is None:
        return None, {}
    entry = UserEntry(preferred_providers=tuple(orjson.loads(row.preferred_providers)))
    for membership in session.exec(select(MembershipRow).where(MembershipRow.user == user)):
        entry.memberships[membership.org] = membership.role
    tokens = session.exec(select(TokenRow.token_hash, TokenRow.limits, TokenRow.account).where(TokenRow.user == user))
    return entry, {token_hash: token_terms(limits, account) for token_hash, limits, account in tokens}


def token_terms(limits: str | None, account: str | None) -> TokenTerms:
    """What the index keeps of a token's limits (ApiTokenLimits' proto3 JSON, which leaves out the
    limits it does not set) and account: its expireTime as Unix time, whether it sets any other
    limit (limits_beyond_expiry) and the org it bills."""
    own = orjson.loads(limits) if limits else {}
    expire_time = own.get("expireTime")
    return TokenTerms(
        expiry=datetime.fromisoformat(expire_time).timestamp() if expire_time else None,
        limited=limits_beyond_expiry(own),
        account=account or "",
    )


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


def config_rows(session: Session, ids: Collection[str] | None = None) -> tuple[list[ProviderRow], list[PriceRow]]:
    """The providers (all of them when no ids are given) and their price tables."""
    providers = select(ProviderRow).order_by(ProviderRow.id)
    prices = select(PriceRow).order_by(PriceRow.provider, PriceRow.provider_model)
    if ids is not None:
        providers = providers.where(ProviderRow.id.in_(ids))
        prices = prices.where(PriceRow.provider.in_(ids))
    return list(session.exec(providers)), list(session.exec(prices))
