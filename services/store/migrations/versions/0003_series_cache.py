"""Downsampled chart series, kept by the sync loop.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "series_cache",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(80), primary_key=True),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("axis", sa.String(10), nullable=False),
        sa.Column("x", sa.JSON, nullable=False),
        sa.Column("y", sa.JSON, nullable=False),
        sa.Column("dirty", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("series_cache")
