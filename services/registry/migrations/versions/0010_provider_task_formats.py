"""provider task formats

How each provider is called per task ("openai" or "hub"), a JSON object of task -> format;
tasks it does not name take their default (services/registry/storage/tables.py ProviderRow).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("task_formats", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("task_formats")
