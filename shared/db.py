"""Database engine, sessions and migrations shared by the services that keep state.

Each stateful service owns its tables and its Alembic history (its own version table),
so the profiler and the trainer can share one database without stepping on each other.
"""

import contextlib
import fcntl
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import reason
from shared.settings import Settings

log = logging.getLogger("unast.db")


def make_engine(
    url: str,
    *,
    connect_timeout_s: int = 5,
    pool_timeout_s: float = 5.0,
    statement_timeout_s: float = 30.0,
) -> Engine:
    """An engine whose every wait is bounded: connecting, waiting for a pooled connection, and one
    statement (PostgreSQL's statement_timeout; SQLite's wait for the write lock). A database that is
    down or hung then raises within these times instead of holding the caller."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        timeout = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
        options = f"{parsed.query['options']} {timeout}" if "options" in parsed.query else timeout
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=pool_timeout_s,
            connect_args={"connect_timeout": connect_timeout_s, "options": options},
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_timeout=pool_timeout_s, connect_args={"timeout": statement_timeout_s})
    busy_ms = round(statement_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets readers run beside the one writer
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    return engine


def engine_from_settings(settings: Settings) -> Engine:
    """The engine of UNAST_DATABASE_URL with the configured timeouts."""
    return make_engine(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
    )


class DatabaseUnavailable(Exception):
    """The database did not answer within the start-up wait; the message is one line for the operator."""


def wait_for_database(engine: Engine, wait_s: float, stop: threading.Event | None = None) -> None:
    """Return once the database answers (or `stop` is set: the caller looks). Until then try again
    with back-off, one log line per attempt, for up to `wait_s` seconds; then raise
    DatabaseUnavailable."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + wait_s
    delay = 0.5
    for attempt in itertools.count(1):
        try:
            ping(engine)
            return
        except SQLAlchemyError as exc:
            why = reason(exc)
        left = deadline - time.monotonic()
        where = engine.url.render_as_string(hide_password=True)
        if stop.is_set():
            return
        if left <= 0:
            raise DatabaseUnavailable(f"the database at {where} did not answer within {wait_s:g} s ({why})")
        pause = min(delay, left)
        log.warning(
            "the database does not answer (attempt %d: %s); trying again in %.1f s", attempt, why, pause
        )
        stop.wait(pause)
        delay = min(2 * delay, 10.0)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise if the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _alembic_config(script_location: Path, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["version_table"] = version_table
    return cfg


@contextlib.contextmanager
def named_lock(engine: Engine, name: str) -> Iterator[None]:
    """A lock across processes sharing this database: migrations (an API and a worker starting together),
    or the profiler's one measurement at a time per device. Advisory lock on PostgreSQL, a file lock
    beside the database file on SQLite."""
    if engine.dialect.name == "postgresql":
        key = zlib.crc32(name.encode())
        with engine.connect() as conn:
            # waiting for the lock may take as long as its holder's work (a measurement): no statement timeout
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, script_location: Path, version_table: str) -> None:
    """Apply a service's migrations up to head (idempotent)."""
    cfg = _alembic_config(script_location, version_table)
    with named_lock(engine, version_table), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_at_head(engine: Engine, script_location: Path, version_table: str) -> bool:
    heads = set(ScriptDirectory.from_config(_alembic_config(script_location, version_table)).get_heads())
    with engine.connect() as conn:
        current = MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_heads()
    return set(current) == heads


def run_migrations(context, target_metadata: MetaData) -> None:
    """Body of every service's migrations/env.py: run on the connection handed in by upgrade()."""
    cfg = context.config
    connection = cfg.attributes.get("connection")
    if connection is None:  # `alembic` command line: connect from settings
        from shared.settings import get_settings

        engine = engine_from_settings(get_settings())
        with engine.begin() as connection:
            _configure_and_run(context, connection, target_metadata, cfg)
        return
    _configure_and_run(context, connection, target_metadata, cfg)


def _configure_and_run(context, connection, target_metadata: MetaData, cfg: Config) -> None:
    version_table = cfg.attributes.get("version_table") or cfg.get_main_option("version_table")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
        include_name=_own_tables(target_metadata),
    )
    with context.begin_transaction():
        context.run_migrations()


def _own_tables(target_metadata: MetaData):
    # Autogenerate must only see this service's tables, not its neighbours' in the same database.
    def include(name, type_, _parent):
        return type_ != "table" or name in target_metadata.tables

    return include
