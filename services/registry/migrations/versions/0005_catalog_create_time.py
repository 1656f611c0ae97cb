"""catalog create time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 07:00:00

Every catalog model gets the time it entered the catalog (OpenAI's
`created` in /v1/models). Rows that predate this migration get the
migration's time: their insertion time was never recorded.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MODELS = sa.table("models", sa.column("create_time", sqlmodel.sql.sqltypes.UTCDateTime()))


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL: a literal server default would
    # bypass UTCDateTime's encoding.
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("create_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.get_bind().execute(MODELS.update().values(create_time=datetime.now(UTC)))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.alter_column("create_time", existing_type=sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("create_time")
