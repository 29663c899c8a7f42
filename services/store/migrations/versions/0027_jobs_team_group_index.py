"""The jobs' (team, status_group, owner) index: the dashboard's counts under "My team", and under "Everyone" those
of the hidden teams it takes off the running totals, are read from the index alone (on every 2 s refresh), not
from every row of the team's jobs that (team, id) leads to.

Revision ID: 0027
Revises: 0026
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_team_group", "jobs", ["team", "status_group", "owner"])


def downgrade() -> None:
    op.drop_index("ix_jobs_team_group", table_name="jobs")
