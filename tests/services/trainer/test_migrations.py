"""The trainer's migrations build exactly the tables its models describe, and downgrade cleanly."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.trainer.main import MIGRATIONS, VERSION_TABLE
from services.trainer.models import Base
from shared.db import _alembic_config, _own_tables, make_engine, upgrade


def test_migrations_match_the_models_and_downgrade(database_url):
    engine = make_engine(database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _own_tables(Base.metadata)})
        assert compare_metadata(context, Base.metadata) == []
    cfg = _alembic_config(MIGRATIONS, VERSION_TABLE)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "t0001")
    assert not set(inspect(engine).get_table_names()) & set(Base.metadata.tables)
    engine.dispose()
