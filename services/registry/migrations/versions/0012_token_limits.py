"""token limits

Each API token's own limits (requests and tokens per minute, a budget with its period,
an expiry, allowed models) as the proto3 JSON of ApiTokenLimits (NULL: none), and the org an
org admin's token for the org bills (NULL: its user) (services/registry/storage/tables.py TokenRow,
docs/api-keys.md).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("limits", sa.Text(), nullable=True))  # nullable: no table copy
    op.add_column("tokens", sa.Column("account", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("limits")
        batch.drop_column("account")
