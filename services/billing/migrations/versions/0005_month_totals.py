"""running month totals per account

A reservation's check read the sum of every ledger row of the account's month,
which grew with the month (a busy account's reservation passed the Router's
timeout, and its limit went unchecked). The totals are now kept up to date by
every ledger write; this fills them from the rows already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 05:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "month_totals",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("month", sa.String(), nullable=False),
        sa.Column("charged_nano_usd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account", "month"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    month = "to_char(start_time, 'YYYY-MM')" if postgres else "strftime('%Y-%m', start_time)"
    charged = "CASE WHEN state = 'settled' THEN cost_nano_usd ELSE estimated_nano_usd END"
    # LEAST saturates on PostgreSQL (NUMERIC sum); SQLite's MIN(a, b) does the same.
    least = "LEAST" if postgres else "MIN"
    op.execute(
        f"INSERT INTO month_totals (account, month, charged_nano_usd) "
        f"SELECT account, {month}, {least}(SUM({charged}), 9223372036854775807) FROM ledger GROUP BY account, {month}"
    )


def downgrade() -> None:
    op.drop_table("month_totals")
