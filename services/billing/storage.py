"""Billing's tables."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class LedgerEntry(SQLModel, table=True):
    """A request a provider answered; state goes pending -> settled | unpriced."""

    __tablename__ = "ledger"
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
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    estimated_nano_usd: int = 0
    cost_nano_usd: int | None = None
    state: str = Field(default="pending", index=True)
    reason: str = ""


metadata = SQLModel.metadata
