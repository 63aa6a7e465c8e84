"""devices, luts, lut entries, validations, jobs

Revision ID: p0002
Revises: p0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiler_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "profiler_luts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("shape_hash", sa.String(length=16), nullable=False),
        sa.Column("shape_name", sa.String(length=100), nullable=True),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("regime", sa.String(length=8), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=10), nullable=False),
        sa.Column("operator_count", sa.Integer(), nullable=False),
        sa.Column("fixed", sa.JSON(), nullable=False),
        sa.Column("activation_method", sa.String(length=10), nullable=False),
        sa.Column("clock", sa.String(length=16), nullable=False),
        sa.Column("build_seconds", sa.Float(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["profiler_devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "device_id", "shape_hash", "regime", "batch", "length", "dtype", name="uq_profiler_lut_key"
        ),
    )
    with op.batch_alter_table("profiler_luts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiler_luts_device_id"), ["device_id"], unique=False)

    op.create_table(
        "profiler_lut_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lut_id", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.JSON(), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("p10_ms", sa.Float(), nullable=False),
        sa.Column("p90_ms", sa.Float(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("cv", sa.Float(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("weight_bytes", sa.BigInteger(), nullable=False),
        sa.Column("kv_bytes_per_token", sa.BigInteger(), nullable=False),
        sa.Column("activation_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["lut_id"], ["profiler_luts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lut_id", "spec_hash", name="uq_profiler_lut_entry"),
    )
    with op.batch_alter_table("profiler_lut_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiler_lut_entries_lut_id"), ["lut_id"], unique=False)

    op.create_table(
        "profiler_validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lut_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("median_abs_error", sa.Float(), nullable=False),
        sa.Column("max_abs_error", sa.Float(), nullable=False),
        sa.Column("drift", sa.Float(), nullable=False),
        sa.Column("architectures", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lut_id"], ["profiler_luts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("profiler_validations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_profiler_validations_lut_id"), ["lut_id"], unique=False)

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


def downgrade() -> None:
    with op.batch_alter_table("profiler_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiler_jobs_state"))

    op.drop_table("profiler_jobs")
    with op.batch_alter_table("profiler_validations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiler_validations_lut_id"))

    op.drop_table("profiler_validations")
    with op.batch_alter_table("profiler_lut_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiler_lut_entries_lut_id"))

    op.drop_table("profiler_lut_entries")
    with op.batch_alter_table("profiler_luts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiler_luts_device_id"))

    op.drop_table("profiler_luts")
    op.drop_table("profiler_devices")
