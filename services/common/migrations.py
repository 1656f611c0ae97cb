"""The body of every service's Alembic env.py: migrate one service's tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from services.common.db import make_engine


def run_migrations(target_metadata: MetaData) -> None:
    """Runs the migrations of the current Alembic context, online or offline."""
    url = context.config.get_main_option("sqlalchemy.url")
    # batch mode lets ALTER TABLE work on SQLite
    options = {"target_metadata": target_metadata, "render_as_batch": True, "compare_type": True}
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
