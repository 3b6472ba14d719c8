"""Where the history lives and how it is opened: one SQLAlchemy engine for SQLite and PostgreSQL.

GSM8K_HISTORY_URL (`postgresql://user:password@host:port/db`, or `sqlite:///path`) selects the database;
without it the history is a SQLite file in the cache (`$GSM8K_BENCH_CACHE/history.sqlite`).  Opening a
store brings its schema to the newest migration first (Alembic, under a lock: two processes never
migrate at once).  Write transactions on SQLite take the write lock when they begin (BEGIN IMMEDIATE), so
two ingests queue instead of failing half-way; PostgreSQL's unique run key does the same job there.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from gsm8k_bench.core.errors import BenchError
from gsm8k_bench.serving import venvs

URL_VARIABLE = "GSM8K_HISTORY_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "sqlite": "sqlite+pysqlite"}
# pg_advisory_xact_lock's key for migrations: any constant shared by every process of this project.
MIGRATION_LOCK = 0x67736D386B  # "gsm8k"
# How long a SQLite writer waits for another one (a whole dispatch's ingest holds the lock per run).
SQLITE_WAIT_S = 300


class HistoryError(BenchError):
    """The history cannot be opened or written: the message names the database (password hidden)."""


def default_path() -> Path:
    return venvs.cache_dir() / "history.sqlite"


def configured_url(environ: Mapping[str, str] | None = None) -> str:
    """GSM8K_HISTORY_URL, or the default SQLite file's URL."""
    environ = os.environ if environ is None else environ
    return environ.get(URL_VARIABLE) or f"sqlite:///{default_path()}"


def parse_url(url: str) -> URL:
    """The URL with this project's driver for its scheme; anything else is refused, naming the variable."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HistoryError(f"{URL_VARIABLE}: not a database URL (allowed: postgresql://USER:PASSWORD@HOST/DB, "
                           "sqlite:///PATH)") from None
    scheme = parsed.drivername.split("+")[0]
    if scheme not in DRIVERS:
        raise HistoryError(f"{URL_VARIABLE}: unsupported database {scheme!r} "
                           "(allowed: postgresql://USER:PASSWORD@HOST/DB, sqlite:///PATH)")
    return parsed.set(drivername=DRIVERS[scheme])


def shown(url: URL) -> str:
    """The URL as it may be printed: the password replaced by ***."""
    return url.render_as_string(hide_password=True)


def _sqlite_setup(engine: Engine) -> None:
    """pysqlite's own transaction handling off; BEGIN (readers) or BEGIN IMMEDIATE (writers) from here."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for an ingest
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("writer")
                                   else "BEGIN")


def create(url: str) -> Engine:
    """An engine for the URL (not yet connected)."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(f"cannot open the history database {shown(parsed)}: cannot create its folder "
                                   f"{folder}: {exc.strerror or exc}") from None
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_WAIT_S})
        _sqlite_setup(engine)
        return engine
    return create_engine(parsed, connect_args={"connect_timeout": 10})


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema to `revision`, holding the migration lock (a no-op when it is there already)."""
    with engine.connect().execution_options(writer=True) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        command.upgrade(_alembic_config(connection), revision)


def open_store(url: str | None = None) -> Engine:
    """The configured history, reachable and migrated to the newest schema; else a HistoryError saying why."""
    engine = create(url or configured_url())
    try:
        if current_revision(engine) != head_revision():  # else no lock: a reader never waits for a writer
            upgrade(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise HistoryError(f"cannot open the history database {shown(engine.url)}: {reason}") from None
    return engine
