"""reconciler claims on ledger rows

Two Billing replicas each run a reconciler. A reconciler claims a page of
pending requests (claimed_until, a Unix time) before asking the provider's
cost API, so no other asks for, or settles, the same requests meanwhile; a
claim left by a killed replica runs out.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 07:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("claimed_until", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("claimed_until")
