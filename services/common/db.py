"""The database: a SQLAlchemy engine (SQLite in WAL mode by default, any URL
otherwise), sessions run off the event loop, and Alembic migrations."""

from __future__ import annotations

import ast
import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Executable, column, event, inspect, select, table
from sqlalchemy.engine import Engine, Row
from sqlmodel import Session, create_engine

from services.common.config import ServiceSettings

T = TypeVar("T")
LARGEST_CHUNK = 512


def padded_chunks(items: Sequence[T], largest: int = LARGEST_CHUNK) -> Iterator[Sequence[T]]:
    """Slices of at most `largest` items, each padded to a power-of-two length
    by repeating its last item: only for statements where a repeat changes
    nothing (IN lists, INSERT ... ON CONFLICT DO NOTHING).

    A statement over a list has one SQL text per list length, and SQLite's
    driver keeps up to 128 compiled statements: lists of arbitrary lengths
    filled that cache with large statements (Billing's memory swung by ~100 MB
    under load). Power-of-two lengths bound the texts to a few that stay cached.
    """
    for start in range(0, len(items), largest):
        chunk = list(items[start : start + largest])
        length = 1 << (len(chunk) - 1).bit_length()
        yield chunk + [chunk[-1]] * (length - len(chunk))


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite connections get WAL and a busy timeout.

    hide_parameters: a database error's message never carries the statement's
    values (provider API keys, billing authorizations) into a log.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, hide_parameters=True, connect_args={"check_same_thread": False, "timeout": 5})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    return create_engine(url, hide_parameters=True, pool_size=10, max_overflow=10, pool_pre_ping=True)


def version_table(service: str) -> str:
    """Where Alembic keeps a service's revision: a table per service, so that several
    services can share one PostgreSQL database."""
    return f"{service}_alembic_version"


def head_revisions(migrations_dir: Path) -> set[str]:
    """The newest revisions of the migration scripts, read from their `revision` and
    `down_revision` assignments without importing them (or Alembic); none when a script
    states its revision otherwise (Alembic, importing it, then tells)."""
    revisions: set[str] = set()
    replaced: set[str] = set()
    for script in (migrations_dir / "versions").glob("*.py"):
        assigned = _assignments(script)
        if not isinstance(assigned.get("revision"), str):
            return set()
        revisions.add(assigned["revision"])
        down = assigned.get("down_revision")
        replaced.update([down] if isinstance(down, str) else down or ())
    return revisions - replaced


def _assignments(script: Path) -> dict[str, Any]:
    """The literal values a script assigns to names at its top level."""
    values = {}
    for statement in ast.parse(script.read_text()).body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    with contextlib.suppress(ValueError):  # not a literal (a call, a name): not a revision
                        values[target.id] = ast.literal_eval(statement.value)
    return values


def stored_revisions(engine: Engine, service: str) -> set[str]:
    """The revisions the database is at (none before its first migration)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(version_table(service)):
            return set()
        versions = table(version_table(service), column("version_num"))
        return set(connection.scalars(select(versions.c.version_num)))


def open_database(settings: ServiceSettings, service: str, migrations_dir: Path) -> Database:
    """Opens the service's database, migrated to the newest schema: Alembic runs only when
    the stored revisions are not the scripts' heads (a start at the newest schema skips it)."""
    db = Database(settings.database_url_for(service))
    heads = head_revisions(migrations_dir)
    if not heads or stored_revisions(db.engine, service) != heads:
        migrate(db.url, migrations_dir)
    return db


def migrate(url: str, migrations_dir: Path) -> None:
    """Brings the schema to the newest Alembic revision."""
    # Imported here: Alembic (with Mako and Pygments) costs every start ~0.2 CPU-s, and most starts migrate nothing.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


class Database:
    """Runs session work on worker threads so the event loop never blocks.

    SQLite allows one writer at a time, so it gets one thread; other
    databases get a small pool.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        workers = 1 if url.startswith("sqlite") else 8
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")

    def _in_session(self, work: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session:
            return work(session)

    async def run(self, work: Callable[[Session], T]) -> T:
        """Runs work(session) on a database thread; work commits what it writes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_session, work)

    async def query(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> list[Row]:
        """The rows of a read-only Core statement, on a database thread, through a plain connection:
        no ORM session, so a background poll costs a fraction of session work (build the statement
        once, at import, so its compiled form is cached too)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._query, statement, parameters or {})

    def _query(self, statement: Executable, parameters: Mapping[str, Any]) -> list[Row]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement, parameters))

    def read(self, work: Callable[[Session], T]) -> T:
        """Runs read-only work(session) on the calling thread (never the event loop's)."""
        return self._in_session(work)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
