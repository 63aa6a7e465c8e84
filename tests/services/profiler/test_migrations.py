"""The profiler's migrations build exactly the tables its models describe, and downgrade cleanly."""

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from services.profiler.main import MIGRATIONS, VERSION_TABLE
from services.profiler.models import QUEUE, Base, ValidationRow
from shared.db import _alembic_config, _own_tables, make_engine, make_sessionmaker, upgrade
from shared.schemas.jobs import Job
from shared.schemas.lut import ValidationResult


def test_migrations_match_the_models_and_downgrade(database_url):
    engine = make_engine(database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _own_tables(Base.metadata)})
        assert compare_metadata(context, Base.metadata) == []
    cfg = _alembic_config(MIGRATIONS, VERSION_TABLE)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "p0001")
    assert not set(inspect(engine).get_table_names()) & set(Base.metadata.tables)
    engine.dispose()


def test_p0003_carries_old_jobs_and_validations_into_the_new_forms(database_url):
    """A database at p0002 with a finished build, a validation and its job comes up readable."""
    engine = make_engine(database_url)
    cfg = _alembic_config(MIGRATIONS, VERSION_TABLE)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "p0002")
        conn.execute(
            text(
                "INSERT INTO profiler_devices (id, key, name, kind, memory_bytes, fingerprint, created_at) "
                "VALUES (1, 'k', 'cpu', 'cpu', 1, '{}', CURRENT_TIMESTAMP)"
            )
        )
        layers = [{"attention": {"kind": "identity"}, "mlp": {"kind": "mlp", "intermediate_size": 48}}]
        architectures = [{"architecture": {"layers": layers}, "predicted_ms": 1.0, "error": 0.1}]
        conn.execute(
            text(
                "INSERT INTO profiler_luts (id, device_id, shape_hash, shape_name, shape, regime, batch, "
                "length, dtype, operator_count, fixed, activation_method, clock, build_seconds, measured_at) "
                "VALUES "
                "(1, 1, 'h', 'tiny', '{}', 'prefill', 1, 16, 'float32', 0, '{}', 'computed', 'thread_time', "
                "1, "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO profiler_validations (id, lut_id, count, seed, median_abs_error, max_abs_error, "
                "drift, architectures, created_at) VALUES (1, 1, 1, 0, 0.1, 0.1, 0, :a, CURRENT_TIMESTAMP)"
            ),
            {"a": json.dumps(architectures)},
        )
        conn.execute(
            text(
                "INSERT INTO profiler_jobs (id, kind, state, progress, message, request, device_id, lut_id, "
                "validation_id, created_at, started_at, finished_at) VALUES (7, 'validate', 'succeeded', 1, "
                "'done', '{\"count\": 1}', 1, 1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    with make_sessionmaker(engine)() as session:
        (row,), total = QUEUE.page(session)
        job = Job.model_validate(row)  # read as the API shows every job
        assert (total, job.kind, job.state, job.attempt) == (1, "validate", "succeeded", 1)
        result = ValidationResult.model_validate(row.result)  # what GET /v1/jobs/{id}/result answers
        assert (result.validation_id, result.lut_id, result.device_id) == (1, 1, 1)
        assert job.spec == {"kind": "validate", "count": 1, "lut_id": 1}
        validation = session.scalar(select(ValidationRow))
        assert validation.architectures[0]["architecture"] == {
            "choices": {"block0.attn": "identity", "block0.mlp": "mlp_i48"}
        }
    engine.dispose()
