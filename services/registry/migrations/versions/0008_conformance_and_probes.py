"""conformance reports and health probes

A mapping's status reason (the "error" status the probes set), its latest
conformance report, and the probes' shared state and leases
(services/registry/storage/tables.py ConformanceReportRow, ProbeStateRow).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 10:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mappings") as batch:
        batch.add_column(
            sa.Column("status_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
    op.create_table(
        "conformance_reports",
        sa.Column("mapping_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("check_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("passed_checks", sa.Integer(), nullable=False),
        sa.Column("failed_checks", sa.Integer(), nullable=False),
        sa.Column("skipped_checks", sa.Integer(), nullable=False),
        sa.Column("supports_tools", sa.Boolean(), nullable=False),
        sa.Column("supports_structured_output", sa.Boolean(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["mapping_id"], ["mappings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mapping_id"),
    )
    op.create_table(
        "probe_states",
        sa.Column("mapping_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("next_due", sa.Float(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["mapping_id"], ["mappings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("mapping_id"),
    )


def downgrade() -> None:
    op.drop_table("probe_states")
    op.drop_table("conformance_reports")
    with op.batch_alter_table("mappings") as batch:
        batch.drop_column("status_reason")
