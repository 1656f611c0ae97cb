"""provisional stream records

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:35:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("provisional", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("provisional")
