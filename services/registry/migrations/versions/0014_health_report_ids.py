"""health report ids

The request ids of the Routers' health reports the Registry applied, remembered for a bounded
time so that a retried report is applied once (services/registry/storage/health_records.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 21:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_reports",
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("receive_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("health_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_health_reports_receive_time"), ["receive_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("health_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_health_reports_receive_time"))
    op.drop_table("health_reports")
