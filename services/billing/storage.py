"""Billing's tables.

Money is in nano-USD, stored as 64-bit integers (BigInteger: PostgreSQL's
INTEGER is only 32 bits).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, String
from sqlmodel import Field, SQLModel

# Ledger states.
PENDING = "pending"
SETTLED = "settled"
UNPRICED = "unpriced"


def int64_column(nullable: bool = False) -> Column:
    """A 64-bit integer column (nano-USD, token counts)."""
    return Column(BigInteger, nullable=nullable, default=None if nullable else 0)


class LedgerEntry(SQLModel, table=True):
    """A request a provider answered; state goes pending -> settled | unpriced."""

    __tablename__ = "ledger"
    __table_args__ = (
        # The reconciler pages through one provider's pending requests by request id.
        Index("ix_ledger_reconcile", "provider", "state", "request_id"),
        # Ageing finds old pending requests.
        Index("ix_ledger_state_end_time", "state", "end_time"),
        # Usage reports and limit checks read one account's month.
        Index("ix_ledger_account_start_time", "account", "start_time"),
    )
    request_id: str = Field(primary_key=True)
    provider_request_id: str = Field(default="", index=True)
    provider: str = Field(index=True)
    model: str
    provider_model: str
    task: str
    caller: str
    account: str = Field(index=True)
    start_time: datetime
    end_time: datetime
    input_tokens: int = Field(default=0, sa_column=int64_column())
    output_tokens: int = Field(default=0, sa_column=int64_column())
    images: int = Field(default=0, sa_column=int64_column())
    # The unit the task is sold in (services/common/tasks.py; "" before units) and how many were used.
    unit: str = Field(default="", sa_column=Column(String, nullable=False, default="", server_default=""))
    units: int = Field(default=0, sa_column=int64_column())
    estimated_nano_usd: int = Field(default=0, sa_column=int64_column())
    cost_nano_usd: int | None = Field(default=None, sa_column=int64_column(nullable=True))
    state: str = Field(default=PENDING, index=True)
    reason: str = ""
    provisional: bool = False  # a stream's record made when it began; its final record completes it
    # Milliseconds from the call to the provider to its first byte (0: not measured).
    first_token_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0, server_default="0"))
    # Unix time until which one reconciler asks for this request's cost; no other asks meanwhile.
    claimed_until: float = Field(default=0.0, sa_column=Column(Float, nullable=False, default=0.0, server_default="0"))


class BillingAccount(SQLModel, table=True):
    """An account's money settings; an account without a row has none (no credits, no limit)."""

    __tablename__ = "accounts"
    account: str = Field(primary_key=True)
    included_credits_nano_usd: int = Field(default=0, sa_column=int64_column())
    limit_nano_usd: int = Field(default=0, sa_column=int64_column())


class MonthTotal(SQLModel, table=True):
    """What an account's requests of one UTC month charge (settled costs, else estimates),
    kept up to date by every ledger write, so a reservation's check costs the same
    however many requests the month holds. Exact: the total is charged_carry * 2^62 +
    charged_nano_usd (ledger._add_to_totals), read saturated at 2^63 - 1."""

    __tablename__ = "month_totals"
    account: str = Field(primary_key=True)
    month: str = Field(primary_key=True)  # "YYYY-MM" of the requests' start time, UTC
    charged_nano_usd: int = Field(default=0, sa_column=int64_column())
    charged_carry: int = Field(default=0, sa_column=int64_column())


class Reservation(SQLModel, table=True):
    """An estimate reserved before a provider call, until the request is recorded or released."""

    __tablename__ = "reservations"
    request_id: str = Field(primary_key=True)
    account: str = Field(index=True)
    estimated_nano_usd: int = Field(default=0, sa_column=int64_column())
    expires_at: float = Field(index=True)  # Unix time; later than this it no longer counts


class Lease(SQLModel, table=True):
    """A slice of an account's budget held by one Billing process (holder), which decides
    reservations against it in memory (services/billing/book.py). The amount counts against the
    budget until held_until; the holder grants from it only before valid_until."""

    __tablename__ = "leases"
    account: str = Field(primary_key=True)
    holder: str = Field(primary_key=True)  # a Billing process (random id per start)
    amount_nano_usd: int = Field(default=0, sa_column=int64_column())
    valid_until: float  # Unix time; the holder grants nothing from it later
    # Unix time until which it counts: valid_until + the reservation TTL, so that grants a dead
    # holder made (and never wrote back) stay counted until they would have expired anyway.
    held_until: float = Field(index=True)
    revoked: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))


metadata = SQLModel.metadata
