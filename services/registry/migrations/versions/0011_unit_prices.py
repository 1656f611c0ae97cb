"""unit prices

A price per unit of the mapped task (services/common/tasks.py: audio or video
seconds, characters, ...), set by operators or by the provider's partners.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prices", sa.Column("unit_nano_usd", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        batch.drop_column("unit_nano_usd")
