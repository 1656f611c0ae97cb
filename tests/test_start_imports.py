"""What a service process loads before it serves: only what it uses at start. A suite run starts
some 200 service processes, and each paid ~0.85 CPU-s for imports, most of it for packages it did
not use: the Router and the reference provider loaded SQLAlchemy, SQLModel and Alembic, every
service Alembic although most starts find the database at the newest schema already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from helpers.migrations import BILLING_MIGRATIONS, REGISTRY_MIGRATIONS, database, upgrade  # noqa: F401

from services.common import db
from services.common.config import ServiceSettings
from services.common.secrets import use_secrets_key

DATABASE = {"sqlalchemy", "sqlmodel", "alembic"}
# Each process's entry module and the packages it must start without.
NOT_LOADED = {
    "services.router.server": DATABASE | {"aiohttp"},  # its HTTP client is services/common/http1.py
    "services.reference_provider.app": DATABASE | {"grpc", "cryptography"},  # an HTTP server, as a provider runs
    "services.registry.server": {"alembic", "aiohttp"},  # aiohttp at its first check or probe
    "services.billing.server": {"alembic", "aiohttp"},  # aiohttp at its first cost query
    "services.cli": DATABASE | {"aiohttp", "pydantic_settings"},  # `switchboard up` starts, waits, supervises
}
MIGRATIONS = {"registry": REGISTRY_MIGRATIONS, "billing": BILLING_MIGRATIONS}


def loaded(module: str, packages: set[str]) -> set[str]:
    """Which of the packages importing the module loads, in a fresh interpreter."""
    probe = f"import sys, {module}; print(' '.join(p for p in {sorted(packages)!r} if p in sys.modules))"
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return set(answer.stdout.split())


@pytest.mark.parametrize("module", sorted(NOT_LOADED))
@pytest.mark.e2e  # a fresh interpreter per module
def test_a_process_imports_nothing_it_does_not_use_at_start(module: str) -> None:
    assert loaded(module, NOT_LOADED[module]) == set()


@pytest.mark.parametrize("service", sorted(MIGRATIONS))
def test_the_heads_read_from_the_scripts_are_alembics(service: str) -> None:
    migrations = MIGRATIONS[service]
    assert db.head_revisions(migrations) == set(ScriptDirectory(str(migrations)).get_heads())


@pytest.mark.parametrize("service", sorted(MIGRATIONS))
def test_a_database_is_migrated_when_behind_and_alembic_is_not_run_at_the_newest_schema(
    service: str,
    database: str,  # noqa: F811 (the imported fixture: SQLite and PostgreSQL)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_secrets_key(Fernet.generate_key())  # the Registry's migrations encrypt provider secrets
    migrations = MIGRATIONS[service]
    heads = db.head_revisions(migrations)
    settings = ServiceSettings(database_url=database, data_dir=tmp_path)
    migrated: list[str] = []
    alembic = db.migrate

    def counted_migrate(url: str, directory: Path) -> None:
        migrated.append(url)
        alembic(url, directory)

    monkeypatch.setattr(db, "migrate", counted_migrate)
    upgrade(database, migrations, "0002")  # behind: Alembic brings it to the newest schema
    opened = db.open_database(settings, service, migrations)
    assert db.stored_revisions(opened.engine, service) == heads and len(migrated) == 1
    opened.close()
    opened = db.open_database(settings, service, migrations)  # at the newest schema: no Alembic
    assert db.stored_revisions(opened.engine, service) == heads and len(migrated) == 1
    opened.close()


def test_an_empty_database_is_migrated(tmp_path: Path) -> None:
    settings = ServiceSettings(data_dir=tmp_path)
    opened = db.open_database(settings, "billing", BILLING_MIGRATIONS)
    assert db.stored_revisions(opened.engine, "billing") == db.head_revisions(BILLING_MIGRATIONS)
    opened.close()
