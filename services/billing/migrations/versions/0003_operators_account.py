"""what the admin token spent moves to the operators' account

The admin token used to be billed to the account "admin", which a user could be
named. Its records (caller "": no user) move to OPERATOR_ACCOUNT, which no user or org
can be. Records of a user once named "admin" (caller "admin") stay where they are.
Settings (limit, credits) of "admin" are not moved: they may have been a user's.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:52:00
"""

import sqlalchemy as sa
from alembic import op

from services.common.accounts import OPERATOR_ACCOUNT

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_ACCOUNT = "admin"


def _move(source: str, target: str) -> None:
    op.execute(
        sa.text("UPDATE ledger SET account = :target WHERE caller = '' AND account = :source").bindparams(
            source=source, target=target
        )
    )


def upgrade() -> None:
    _move(OLD_ACCOUNT, OPERATOR_ACCOUNT)


def downgrade() -> None:
    _move(OPERATOR_ACCOUNT, OLD_ACCOUNT)
