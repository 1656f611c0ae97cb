"""Migration tests' tools: a fresh database on SQLite or on a PostgreSQL cluster (fixtures),
upgrading to a revision, and raw statements."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from helpers.postgres import postgres_database
from services.common.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_MIGRATIONS = ROOT / "services" / "registry" / "migrations"
BILLING_MIGRATIONS = ROOT / "services" / "billing" / "migrations"
PROVIDER_ROW = (
    "INSERT INTO providers (id, org, base_url, api_key, tasks, request_id_header, billing_url, "
    "billing_authorization, default_rank, create_time) VALUES ('p', 'o', 'http://x', '', '[]', 'Inference-Id', '', "
    "'', 0, :t)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database's URL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    with postgres_database() as url:
        yield url


def upgrade(url: str, migrations: Path, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


def execute(url: str, statement: str, rows: list[dict] | None = None) -> list[tuple]:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(statement), rows or [{}])
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()
