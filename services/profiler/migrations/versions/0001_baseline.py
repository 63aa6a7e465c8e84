"""baseline: the profiler's history starts here

Revision ID: p0001
Revises:
Create Date: 2026-11-29
"""

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
