import multiprocessing

from sqlalchemy import inspect

from services.profiler import main as profiler_main
from services.trainer import main as trainer_main
from shared.db import is_at_head, make_engine, ping, upgrade

SERVICES = (profiler_main, trainer_main)


def test_upgrade_reaches_head_and_is_idempotent(database_url):
    engine = make_engine(database_url)
    ping(engine)
    for svc in SERVICES:
        assert not is_at_head(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
        upgrade(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
        upgrade(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
        assert is_at_head(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
    # each service keeps its own history in one shared database
    tables = set(inspect(engine).get_table_names())
    assert {"alembic_version_profiler", "alembic_version_trainer"} <= tables
    engine.dispose()


def _upgrade_all(database_url: str) -> None:
    engine = make_engine(database_url)
    for svc in SERVICES:
        upgrade(engine, svc.MIGRATIONS, svc.VERSION_TABLE)
    engine.dispose()


def test_concurrent_upgrades_do_not_collide(database_url):
    # an API and a worker starting together both migrate; processes, as in production
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.map(_upgrade_all, [database_url] * 3)
    engine = make_engine(database_url)
    assert all(is_at_head(engine, svc.MIGRATIONS, svc.VERSION_TABLE) for svc in SERVICES)
    engine.dispose()
