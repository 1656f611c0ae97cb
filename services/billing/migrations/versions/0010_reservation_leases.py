"""reservation leases

A Billing process leases a slice of a limited account's budget and decides reservations
against it in memory; the lease counts against the budget until held_until.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("amount_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.Float(), nullable=False),
        sa.Column("held_until", sa.Float(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("account", "holder"),
    )
    op.create_index("ix_leases_held_until", "leases", ["held_until"])


def downgrade() -> None:
    op.drop_index("ix_leases_held_until", table_name="leases")
    op.drop_table("leases")
