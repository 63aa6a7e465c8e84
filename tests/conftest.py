"""Fixtures every test may use: settings on a fresh database, SQLite and PostgreSQL alike."""

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shared.settings import Settings

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_admin():
    """An engine on the PostgreSQL server, or a skip (a failure in CI) when none answers."""
    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        message = f"PostgreSQL not reachable at {POSTGRES_URL} ({exc.orig.__class__.__name__})"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{message}; TEST_REQUIRE_POSTGRES=1 forbids skipping", pytrace=False)
        pytest.skip(f"{message}; PostgreSQL cases skipped (set TEST_POSTGRES_URL to run them)")
    yield engine
    engine.dispose()


def _fresh_postgres_database(admin) -> Iterator[str]:
    name = f"unast_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database: an SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/unast.db"
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_admin"))


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
        artifacts_root=tmp_path / "artifacts",
        input_roots=[tmp_path / "inputs"],
    )


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:
    """Settings for tests that do not depend on the database backend."""
    return Settings(
        database_url=f"sqlite:///{tmp_path}/unast.db",
        artifacts_root=tmp_path / "artifacts",
        input_roots=[tmp_path / "inputs"],
    )
