"""encrypt provider secrets

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:30:00

Provider API keys and billing authorizations stored in plaintext are
encrypted with the secrets key (services/common/secrets.py). On SQLite the
database is then vacuumed and its WAL truncated, so no page keeps the old
plaintext.
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from services.common.secrets import SecretBox, secret_box

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PROVIDERS = sa.table("providers", sa.column("id"), sa.column("api_key"), sa.column("billing_authorization"))


def _rewrite(change: Callable[[SecretBox, str], str]) -> bool:
    """Applies change(box, value) to both secrets of every provider; whether any row changed."""
    connection = op.get_bind()
    rows = connection.execute(sa.select(PROVIDERS)).all()
    changed = False
    for provider_id, api_key, authorization in rows:
        new = (change(secret_box(), api_key), change(secret_box(), authorization))
        if new != (api_key, authorization):
            changed = True
            update = PROVIDERS.update().where(PROVIDERS.c.id == provider_id)
            connection.execute(update.values(api_key=new[0], billing_authorization=new[1]))
    return changed


def _forget_old_pages() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.get_context().autocommit_block():
            op.execute("VACUUM")
            op.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def upgrade() -> None:
    if _rewrite(SecretBox.seal):
        _forget_old_pages()


def downgrade() -> None:
    _rewrite(SecretBox.open)
