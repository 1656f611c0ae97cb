"""one name space for users and orgs

Users and orgs share one name space (services/registry/storage/tables.py AccountNameRow):
the table is filled from the existing users and orgs. Names that clash (a user and an
org, or two accounts differing only in letter case) cannot be merged automatically:
the migration stops and names them, and operators must rename one of each pair.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:50:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACCOUNTS = "SELECT name, 'user' AS kind FROM users UNION ALL SELECT name, 'org' AS kind FROM orgs"


class NameClash(RuntimeError):
    """Existing users and orgs whose names would be the same account."""


def clashes(connection: sa.Connection) -> list[str]:
    """Each clashing group as "user 'acme' / org 'acme'", sorted."""
    rows = connection.execute(
        sa.text(
            f"SELECT a.kind, a.name FROM ({ACCOUNTS}) a JOIN (SELECT LOWER(name) AS folded FROM ({ACCOUNTS}) b "
            "GROUP BY LOWER(name) HAVING COUNT(*) > 1) c ON LOWER(a.name) = c.folded ORDER BY LOWER(a.name), a.kind"
        )
    ).all()
    groups: dict[str, list[str]] = {}
    for kind, name in rows:
        groups.setdefault(name.lower(), []).append(f"{kind} {name!r}")
    return [" / ".join(group) for group in groups.values()]


def upgrade() -> None:
    connection = op.get_bind()
    clashing = clashes(connection)
    if clashing:
        raise NameClash(
            "users and orgs now share one name space, but these accounts have the same name: "
            + "; ".join(clashing)
            + ". Rename one of each (there is no automatic rename: the name is the billed account), "
            "then start the Registry again."
        )
    op.create_table(
        "account_names",
        sa.Column("folded", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("folded"),
    )
    op.execute(f"INSERT INTO account_names (folded, name, kind) SELECT LOWER(name), name, kind FROM ({ACCOUNTS}) a")


def downgrade() -> None:
    op.drop_table("account_names")
