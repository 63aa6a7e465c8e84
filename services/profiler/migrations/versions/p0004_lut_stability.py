"""LUTs record whether the device's speed held during their build

Revision ID: p0004
Revises: p0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "p0004"
down_revision = "p0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiler_luts") as batch:
        batch.add_column(sa.Column("drift", sa.Float(), nullable=True))
        batch.add_column(sa.Column("stable", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("profiler_luts") as batch:
        batch.drop_column("stable")
        batch.drop_column("drift")
