"""token suffix and catalog imports

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:00:00

Tokens keep the last four characters of their secret (listed to tell them apart;
tokens made before have none). Every catalog batch upsert is recorded with its
time and size (operators see the last import).
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suffix", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""))
    op.create_table(
        "catalog_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_count", sa.Integer(), nullable=False),
        sa.Column("create_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("catalog_imports")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("suffix")
