"""jobs: progress as a fraction, the progress an attempt started from (for its ETA), a status message

Revision ID: t0003
Revises: t0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "t0003"
down_revision = "t0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trainer_jobs") as batch:
        batch.add_column(sa.Column("progress", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempt_progress", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("message", sa.String(length=500), nullable=False, server_default=""))
    # jobs that finished before this revision: succeeded ones are done, others as far as their steps
    op.execute("UPDATE trainer_jobs SET progress = 1 WHERE state = 'succeeded'")
    op.execute(
        "UPDATE trainer_jobs SET progress = CAST(step AS FLOAT) / steps "
        "WHERE state <> 'succeeded' AND steps IS NOT NULL AND steps > 0"
    )
    op.execute("UPDATE trainer_jobs SET message = state")


def downgrade() -> None:
    with op.batch_alter_table("trainer_jobs") as batch:
        batch.drop_column("message")
        batch.drop_column("attempt_progress")
        batch.drop_column("progress")
