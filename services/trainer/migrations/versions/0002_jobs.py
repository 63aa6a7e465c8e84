"""jobs, their log lines and artifacts

Revision ID: t0002
Revises: t0001
Create Date: 2026-11-29

Times are naive UTC (services/trainer/models.py reads them back as aware UTC).
"""

import sqlalchemy as sa
from alembic import op

revision = "t0002"
down_revision = "t0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trainer_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_digest", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=True),
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
    with op.batch_alter_table("trainer_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trainer_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index("ix_trainer_jobs_state_created", ["state", "created_at"], unique=False)

    op.create_table(
        "trainer_artifacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["trainer_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "name"),
    )
    with op.batch_alter_table("trainer_artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trainer_artifacts_job_id"), ["job_id"], unique=False)

    op.create_table(
        "trainer_job_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["trainer_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("trainer_job_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trainer_job_logs_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trainer_job_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trainer_job_logs_job_id"))

    op.drop_table("trainer_job_logs")
    with op.batch_alter_table("trainer_artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trainer_artifacts_job_id"))

    op.drop_table("trainer_artifacts")
    with op.batch_alter_table("trainer_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_trainer_jobs_state_created")
        batch_op.drop_index(batch_op.f("ix_trainer_jobs_kind"))

    op.drop_table("trainer_jobs")
