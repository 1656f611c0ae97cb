"""shared provider model health

One health record per (provider, provider model), shared by every Router replica: the live
traffic they report and the probes' outcomes (services/registry/storage/tables.py ModelHealthRow,
services/common/health.py, docs/provider-selection.md).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 19:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_health",
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("provider_model", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "provider_model"),
    )


def downgrade() -> None:
    op.drop_table("model_health")
