"""mapping capabilities

What each mapping's provider model supports, NULL while unknown
(services/registry/storage/tables.py MappingRow).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = {
    "supports_tools": sa.Boolean(),
    "supports_structured_output": sa.Boolean(),
    "context_length": sa.Integer(),
}


def upgrade() -> None:
    for name, kind in COLUMNS.items():  # nullable: no table copy, also on SQLite
        op.add_column("mappings", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mappings") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
