"""The Registry's tables. Lists (tags, tasks) are stored as JSON text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import AutoString

from services.common.secrets import ENCRYPTED_PREFIX, secret_box
from services.common.tasks import DEFAULT_REQUEST_ID_HEADER


def utcnow() -> datetime:
    return datetime.now(UTC)


class SealedString(TypeDecorator[str]):
    """A string column stored encrypted (services/common/secrets.py's SecretBox); reading a
    plaintext value (not yet migrated) gives it as it is."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value and secret_box().seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if not value or not value.startswith(ENCRYPTED_PREFIX):
            return value
        return secret_box().open(value)


class AccountNameRow(SQLModel, table=True):
    """A user or org name, taken once: users and orgs share one name space.

    The primary key is the name in lower case, so that neither two accounts nor
    "Acme" and "acme" can coexist; an insert that collides fails in the database,
    also when two writers race (any replica, SQLite or PostgreSQL).
    """

    __tablename__ = "account_names"
    folded: str = Field(primary_key=True)
    name: str
    kind: str  # "user" or "org"


class OrgRow(SQLModel, table=True):
    """An organization."""

    __tablename__ = "orgs"
    name: str = Field(primary_key=True)
    create_time: datetime = Field(default_factory=utcnow)


class UserRow(SQLModel, table=True):
    """A user and their provider preference."""

    __tablename__ = "users"
    name: str = Field(primary_key=True)
    preferred_providers: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    create_time: datetime = Field(default_factory=utcnow)


class MembershipRow(SQLModel, table=True):
    """A user's role in an org."""

    __tablename__ = "memberships"
    org: str = Field(primary_key=True, foreign_key="orgs.name", ondelete="CASCADE")
    user: str = Field(primary_key=True, foreign_key="users.name", ondelete="CASCADE", index=True)
    role: str


class TokenRow(SQLModel, table=True):
    """An API token, stored as its SHA-256 hash only."""

    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("user", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    user: str = Field(foreign_key="users.name", ondelete="CASCADE", index=True)
    name: str
    token_hash: str = Field(unique=True)
    # The secret's last characters (TOKEN_SUFFIX_CHARS), listed to tell tokens apart; "" before 0007.
    suffix: str = Field(default="", sa_column=Column(String, nullable=False, default="", server_default=""))
    create_time: datetime = Field(default_factory=utcnow)
    # The token's own limits as ApiTokenLimits' proto3 JSON (services/registry/domain/token_limits.py); None: none.
    limits: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The org its calls bill (an org admin's token for the org); None: its user.
    account: str | None = None


class ProviderRow(SQLModel, table=True):
    """An inference provider, secrets included (never returned by the API)."""

    __tablename__ = "providers"
    id: str = Field(primary_key=True)
    org: str
    base_url: str
    # Secrets: encrypted at rest (services/common/secrets.py), plaintext to the code.
    api_key: str = Field(default="", sa_column=Column(SealedString, nullable=False, default=""))
    tasks: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    # How it is called per task, {task: "openai" | "hub"}, as JSON (0010); unnamed tasks take their default.
    task_formats: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}", server_default="{}"))
    request_id_header: str = DEFAULT_REQUEST_ID_HEADER
    billing_url: str = ""
    billing_authorization: str = Field(default="", sa_column=Column(SealedString, nullable=False, default=""))
    default_rank: int = 0
    create_time: datetime = Field(default_factory=utcnow)


def _nano_usd() -> Any:
    """A price column: 64-bit, as the price check allows (0 .. 2^63 - 1 nano-USD)."""
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))


class PriceRow(SQLModel, table=True):
    """The operator's price for one provider model, nano-USD."""

    __tablename__ = "prices"
    provider: str = Field(primary_key=True, foreign_key="providers.id", ondelete="CASCADE")
    provider_model: str = Field(primary_key=True)
    input_token_nano_usd: int = _nano_usd()
    output_token_nano_usd: int = _nano_usd()
    request_nano_usd: int = _nano_usd()
    image_nano_usd: int = _nano_usd()
    unit_nano_usd: int = _nano_usd()  # per unit of the mapped task (services/common/tasks.py)


class ModelRow(SQLModel, table=True):
    """A hub model in the catalog."""

    __tablename__ = "models"
    id: str = Field(primary_key=True)
    pipeline_tag: str = ""
    tags: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    adapter_weights_path: str = ""
    # When the model entered the catalog; an upsert of a known model keeps it.
    create_time: datetime = Field(default_factory=utcnow)


class CatalogImportRow(SQLModel, table=True):
    """One catalog batch upsert: when it committed and how many models it wrote."""

    __tablename__ = "catalog_imports"
    id: int | None = Field(default=None, primary_key=True)
    model_count: int
    create_time: datetime = Field(default_factory=utcnow)


class ModelAliasRow(SQLModel, table=True):
    """An operator's other name for a catalog model (never a catalog id itself)."""

    __tablename__ = "model_aliases"
    name: str = Field(primary_key=True)
    target: str
    create_time: datetime = Field(default_factory=utcnow)


class MappingRow(SQLModel, table=True):
    """A model mapping (hf_model set) or a tag-filter mapping (tags_key set).

    tags_key is the sorted tags joined by ",", so one unique constraint covers
    both kinds of duplicate.
    """

    __tablename__ = "mappings"
    __table_args__ = (UniqueConstraint("provider", "task", "hf_model", "tags_key"),)
    id: str = Field(primary_key=True)
    seq: int = Field(index=True)
    provider: str = Field(foreign_key="providers.id", ondelete="CASCADE", index=True)
    type: str
    task: str
    hf_model: str = Field(default="", index=True)
    tags_key: str = ""
    provider_model: str
    status: str
    adapter_type: str = ""
    create_time: datetime = Field(default_factory=utcnow)
    # Why the status is "error" (set by the health probes, secrets redacted); "" otherwise.
    status_reason: str = ""
    # What the provider model supports; NULL while unknown (declared by the partner or observed).
    supports_tools: bool | None = None
    supports_structured_output: bool | None = None
    context_length: int | None = None


class ConformanceReportRow(SQLModel, table=True):
    """A mapping's latest conformance report: its summary as columns, the whole as JSON."""

    __tablename__ = "conformance_reports"
    mapping_id: str = Field(primary_key=True, foreign_key="mappings.id", ondelete="CASCADE")
    check_time: datetime = Field(default_factory=utcnow)
    passed: bool = False
    passed_checks: int = 0
    failed_checks: int = 0
    skipped_checks: int = 0
    supports_tools: bool = False
    supports_structured_output: bool = False
    report: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


class ProbeStateRow(SQLModel, table=True):
    """The health probes of one mapping, shared by every Registry replica: consecutive
    failures, when the next probe is due, and which replica holds the lease to run it."""

    __tablename__ = "probe_states"
    mapping_id: str = Field(primary_key=True, foreign_key="mappings.id", ondelete="CASCADE")
    failures: int = 0
    last_failure: str = ""
    next_due: float = 0.0  # unix seconds
    lease_owner: str = ""
    lease_until: float = 0.0  # unix seconds; a lease past this is free


class ModelHealthRow(SQLModel, table=True):
    """The shared health record of one provider model (services/common/health.py): the live
    traffic every Router replica reported and the probes' outcomes, as the proto3 JSON of a
    ModelHealth. No foreign key: a record outlives its mapping (traffic was measured)."""

    __tablename__ = "model_health"
    provider: str = Field(primary_key=True)
    provider_model: str = Field(primary_key=True)
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    record: str = Field(sa_column=Column(Text, nullable=False))


class HealthReportRow(SQLModel, table=True):
    """A Router's health report the Registry applied, by its request id: a retry of it (the
    first answer was lost) is not applied again. Kept for a bounded time (health_records.py)."""

    __tablename__ = "health_reports"
    request_id: str = Field(primary_key=True)
    receive_time: datetime = Field(default_factory=utcnow, index=True)


class ChangeRow(SQLModel, table=True):
    """One committed write, for the other Registry replicas to apply to their index.

    key: a provider id, a user name, or the model ids of a catalog batch (one a line).
    """

    __tablename__ = "changes"
    revision: int | None = Field(default=None, primary_key=True)
    origin: str
    kind: int
    key: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    create_time: datetime = Field(default_factory=utcnow, index=True)


metadata = SQLModel.metadata
