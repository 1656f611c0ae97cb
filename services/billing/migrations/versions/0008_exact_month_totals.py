"""exact month totals

A month total saturated at 2^63 - 1 lost every earlier charge at the next settlement
(the charge moved from a huge estimate to the cost was subtracted from the saturated
value). A total is now charged_carry * 2^62 + charged_nano_usd, kept exactly; this
recounts the totals from the ledger with sums that cannot overflow (each amount summed
as amount / 2^32 and amount % 2^32, joined in Python).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 16:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CARRY, SPLIT = 2**62, 2**32
CHARGED = "CASE WHEN state = 'settled' THEN cost_nano_usd ELSE estimated_nano_usd END"


def upgrade() -> None:
    op.add_column("month_totals", sa.Column("charged_carry", sa.BigInteger(), nullable=False, server_default="0"))
    bind = op.get_bind()
    month = "to_char(start_time, 'YYYY-MM')" if bind.dialect.name == "postgresql" else "strftime('%Y-%m', start_time)"
    recount = sa.text(
        f"SELECT account, {month}, SUM(({CHARGED}) / {SPLIT}), SUM(({CHARGED}) % {SPLIT}) "
        f"FROM ledger GROUP BY account, {month}"
    )
    totals = _totals()
    for account, month_key, high, low in bind.execute(recount).all():
        carry, rest = divmod(int(high or 0) * SPLIT + int(low or 0), CARRY)
        where = (totals.c.account == account, totals.c.month == month_key)
        bind.execute(totals.update().where(*where).values(charged_nano_usd=rest, charged_carry=carry))


def downgrade() -> None:
    bind = op.get_bind()
    totals = _totals()
    for account, month_key, low, carry in bind.execute(sa.select(totals)).all():
        saturated = max(-(2**63 - 1), min(carry * CARRY + low, 2**63 - 1))
        where = (totals.c.account == account, totals.c.month == month_key)
        bind.execute(totals.update().where(*where).values(charged_nano_usd=saturated))
    with op.batch_alter_table("month_totals") as batch:
        batch.drop_column("charged_carry")


def _totals() -> sa.TableClause:
    return sa.table(
        "month_totals",
        sa.column("account"),
        sa.column("month"),
        sa.column("charged_nano_usd"),
        sa.column("charged_carry"),
    )
