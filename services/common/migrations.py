"""The body of every service's Alembic env.py: migrate one service's tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from services.common.db import make_engine, version_table


def run_migrations(service: str, target_metadata: MetaData) -> None:
    """Runs the migrations of the current Alembic context, online or offline.

    Each service keeps its revision in its own version table (see version_table).
    """
    url = context.config.get_main_option("sqlalchemy.url")
    options = {
        "target_metadata": target_metadata,
        "version_table": version_table(service),
        "render_as_batch": True,  # lets ALTER TABLE work on SQLite
        "compare_type": True,
    }
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
