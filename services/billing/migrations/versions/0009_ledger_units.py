"""ledger units

Each record's unit (the unit its task is sold in: services/common/tasks.py) and
how many of it the answer used, so that usage reports say per task what was
used and what it cost. Records from before units keep "" and 0.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("unit", sa.String(), nullable=False, server_default=""))
    op.add_column("ledger", sa.Column("units", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("units")
        batch.drop_column("unit")
