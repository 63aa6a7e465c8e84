"""profiler jobs on the job runtime (the runtime's job, log-line and artifact tables); validated
architectures in the one architecture form (slot id -> candidate id)

Revision ID: p0003
Revises: p0002
Create Date: 2026-12-01

Old job rows are carried over (integer ids become strings; their request becomes the spec, their
result ids the result). Self-contained on purpose: it does not import the application's code.
"""

import sqlalchemy as sa
from alembic import op

revision = "p0003"
down_revision = "p0002"
branch_labels = None
depends_on = None

SUFFIX = {"attention": "attn", "mlp": "mlp"}


def _name(spec: dict) -> str:
    """spec_name as of this revision."""
    if spec["kind"] == "attention":
        return f"attn_h{spec['num_heads']}_kv{spec['num_kv_heads']}_d{spec['head_dim']}"
    if spec["kind"] == "mlp":
        return f"mlp_i{spec['intermediate_size']}"
    return spec["kind"]


def _choices(architecture: dict) -> dict:
    if "choices" in architecture:
        return architecture
    return {
        "choices": {
            f"block{i}.{SUFFIX[slot_type]}": _name(layer[slot_type])
            for i, layer in enumerate(architecture["layers"])
            for slot_type in ("attention", "mlp")
        }
    }


def upgrade() -> None:
    bind = op.get_bind()
    old_jobs = sa.Table("profiler_jobs", sa.MetaData(), autoload_with=bind)
    carried = [dict(row._mapping) for row in bind.execute(sa.select(old_jobs))]
    with op.batch_alter_table("profiler_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiler_jobs_state"))
    op.drop_table("profiler_jobs")

    jobs = op.create_table(
        "profiler_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_digest", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("attempt_progress", sa.Float(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("artifact_dir", sa.String(length=4096), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("profiler_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiler_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index("ix_profiler_jobs_state_created", ["state", "created_at"], unique=False)
    for table, extra in (
        (
            "profiler_job_logs",
            [
                sa.Column("attempt", sa.Integer(), nullable=False),
                sa.Column("at", sa.DateTime(), nullable=False),
                sa.Column("message", sa.Text(), nullable=False),
            ],
        ),
        (
            "profiler_artifacts",
            [
                sa.Column("name", sa.String(length=200), nullable=False),
                sa.Column("path", sa.String(length=4096), nullable=False),
                sa.Column("bytes", sa.BigInteger(), nullable=False),
                sa.Column("sha256", sa.String(length=64), nullable=False),
                sa.Column("meta", sa.JSON(), nullable=False),
                sa.Column("created_at", sa.DateTime(), nullable=False),
                sa.UniqueConstraint("job_id", "name", name="uq_profiler_artifact"),
            ],
        ),
    ):
        op.create_table(
            table,
            *extra,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("job_id", sa.String(length=32), nullable=False),
            sa.ForeignKeyConstraint(["job_id"], ["profiler_jobs.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_job_id"), ["job_id"], unique=False)

    def naive(moment):  # the runtime stores naive UTC
        return moment.replace(tzinfo=None) if moment is not None and moment.tzinfo else moment

    rows = []
    for old in carried:
        result = {k: old[k] for k in ("lut_id", "validation_id", "device_id") if old[k] is not None}
        spec = {**old["request"], "kind": old["kind"]}
        if old["kind"] == "validate" and old["lut_id"] is not None:
            spec["lut_id"] = old["lut_id"]
        rows.append(
            {
                "id": f"{old['id']:032x}",
                "kind": old["kind"],
                "spec": spec,
                "spec_digest": "",
                "state": old["state"],
                "step": 0,
                "progress": old["progress"],
                "attempt_progress": 0.0,
                "message": old["message"][:500],
                "attempt": 1 if old["started_at"] else 0,
                "cancel_requested": False,
                "heartbeat_at": naive(old["heartbeat_at"]),
                "result": result or None,
                "error": old["error"],
                "created_at": naive(old["created_at"]),
                "started_at": naive(old["started_at"]),
                "finished_at": naive(old["finished_at"]),
            }
        )
    if rows:
        op.bulk_insert(jobs, rows)

    validations = sa.Table("profiler_validations", sa.MetaData(), autoload_with=bind)
    for row in bind.execute(sa.select(validations.c.id, validations.c.architectures)).all():
        converted = [{**a, "architecture": _choices(a["architecture"])} for a in row.architectures]
        bind.execute(validations.update().where(validations.c.id == row.id).values(architectures=converted))


def downgrade() -> None:
    for table in ("profiler_artifacts", "profiler_job_logs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_job_id"))
        op.drop_table(table)
    with op.batch_alter_table("profiler_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_profiler_jobs_state_created")
        batch_op.drop_index(batch_op.f("ix_profiler_jobs_kind"))
    op.drop_table("profiler_jobs")
    op.create_table(
        "profiler_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("lut_id", sa.Integer(), nullable=True),
        sa.Column("validation_id", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["profiler_devices.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["lut_id"], ["profiler_luts.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["validation_id"], ["profiler_validations.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("profiler_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiler_jobs_state"), ["state"], unique=False)
