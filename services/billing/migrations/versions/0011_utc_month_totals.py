"""month totals keyed in UTC

Migrations 0005 and 0008 keyed each ledger row's month on PostgreSQL with
to_char(start_time, 'YYYY-MM'), which formats a timestamptz in the session's TimeZone:
on a server whose TimeZone is not UTC, a request near a month's end or start was counted
in the neighbouring month, while Billing keys months in UTC (ledger.month_of), so the
totals (spending limits, this month's spending) disagreed with the ledger. This recounts
the totals from the ledger with the month keyed in UTC, as 0008 counts them (each amount
summed as amount / 2^32 and amount % 2^32, joined in Python), writes only the totals that
differ, and drops the totals of months none of the account's requests falls in (left by
the wrong keys). SQLite's keys were already UTC (it stores UTC times without an offset):
nothing to do there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CARRY, SPLIT = 2**62, 2**32
CHARGED = "CASE WHEN state = 'settled' THEN cost_nano_usd ELSE estimated_nano_usd END"
MONTH = "to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM')"  # start_time is a timestamptz
# Each month the ledger has for an account beside the total stored for it (either may be missing).
RECOUNT = (
    "SELECT COALESCE(counted.account, stored.account), COALESCE(counted.month, stored.month), "
    "counted.account IS NOT NULL, counted.high, counted.low, stored.charged_nano_usd, stored.charged_carry "
    f"FROM (SELECT account, {MONTH} AS month, SUM(({CHARGED}) / {SPLIT}) AS high, SUM(({CHARGED}) % {SPLIT}) AS low "
    f"FROM ledger GROUP BY account, {MONTH}) AS counted "
    "FULL OUTER JOIN month_totals AS stored ON stored.account = counted.account AND stored.month = counted.month"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # Writers (a replica of the release before, during a rolling upgrade) wait until this commits:
    # a change they made after the recount read the ledger would be overwritten. Reads go on.
    op.execute("LOCK TABLE month_totals IN EXCLUSIVE MODE")
    fixes, stale = [], []
    for account, month, counted, high, low, stored_low, stored_carry in bind.execute(
        sa.text(RECOUNT).execution_options(yield_per=10_000)
    ):
        key = {"account": account, "month": month}
        if not counted:
            stale.append(key)
            continue
        carry, rest = divmod(int(high or 0) * SPLIT + int(low or 0), CARRY)
        if stored_low is None and carry == rest == 0:
            continue  # a missing total reads 0 already
        if (stored_low, stored_carry) != (rest, carry):
            fixes.append({**key, "charged_nano_usd": rest, "charged_carry": carry})
    totals = _totals()
    if fixes:
        insert = postgresql.insert(totals)
        charged = {"charged_nano_usd": insert.excluded.charged_nano_usd, "charged_carry": insert.excluded.charged_carry}
        bind.execute(insert.on_conflict_do_update(index_elements=["account", "month"], set_=charged), fixes)
    if stale:
        where = (totals.c.account == sa.bindparam("account"), totals.c.month == sa.bindparam("month"))
        bind.execute(totals.delete().where(*where), stale)


def downgrade() -> None:
    pass  # the totals keyed in UTC are right at 0010 as well


def _totals() -> sa.TableClause:
    return sa.table(
        "month_totals",
        sa.column("account"),
        sa.column("month"),
        sa.column("charged_nano_usd"),
        sa.column("charged_carry"),
    )
