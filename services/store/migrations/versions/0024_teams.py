"""Teams (issue 20): teams with their settings, admin-defined members and leads, and the team each job (and each
shared template) belongs to.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("everyone_visible", sa.Boolean, nullable=False),
        sa.Column("default_queue", sa.String(253)),
        sa.Column("notify_channel", sa.String(2000)),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "team_members",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("lead", sa.Boolean, nullable=False),
        sa.UniqueConstraint("team_id", "user", name="uq_team_members_team_user"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_team_members_user", "team_members", ["user"])
    # A plain ADD COLUMN on both databases: a batch copy of `jobs` would drop its totals triggers (0010).
    op.add_column("jobs", sa.Column("team", sa.String(100)))
    op.create_index("ix_jobs_team_id", "jobs", ["team", "id"])
    op.add_column("job_templates", sa.Column("team", sa.String(100)))


def downgrade() -> None:
    op.drop_column("job_templates", "team")
    op.drop_index("ix_jobs_team_id", table_name="jobs")
    op.drop_column("jobs", "team")
    op.drop_index("ix_team_members_user", table_name="team_members")
    op.drop_table("team_members")
    op.drop_table("teams")
