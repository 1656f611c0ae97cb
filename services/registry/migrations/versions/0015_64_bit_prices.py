"""64-bit prices

Every price column holds what the price check allows (0 .. 2^63 - 1 nano-USD): the token, request
and image prices were 32-bit INTEGER columns, which PostgreSQL refused past $2.147 (SQLite's
INTEGER is 64-bit already).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 20:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = ("input_token_nano_usd", "output_token_nano_usd", "request_nano_usd", "image_nano_usd")


def upgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        for column in COLUMNS:
            batch.alter_column(column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        for column in COLUMNS:
            batch.alter_column(column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
