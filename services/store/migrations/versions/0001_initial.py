"""Initial schema: jobs, metric points, log archives, events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submission_id", sa.String(36), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_group", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("backend", sa.String(20), nullable=False),
        sa.Column("backend_ref", sa.JSON),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("nodes", sa.Integer, nullable=False),
        sa.Column("cost_per_hour", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("epoch", sa.Integer),
        sa.Column("total_epochs", sa.Integer),
        sa.Column("step", sa.Integer),
        sa.Column("total_steps", sa.Integer),
        sa.Column("progress", sa.Float),
        sa.Column("eta_seconds", sa.Float),
        sa.Column("latest_metrics", sa.JSON, nullable=False),
        sa.Column("final_metrics", sa.JSON, nullable=False),
        sa.Column("gpu_util", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("parent_id", sa.Integer),
        sa.Column("search_text", sa.Text, nullable=False),
    )
    op.create_index("ix_jobs_group_id", "jobs", ["status_group", "id"])
    op.create_index("ix_jobs_owner_group_id", "jobs", ["owner", "status_group", "id"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])

    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Float),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("rank", sa.Integer),
    )
    op.create_index("ix_metric_points_job_name_step", "metric_points", ["job_id", "name", "step"])

    op.create_table(
        "job_logs",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("offset", sa.Integer, nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("parser_state", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )

    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("job_logs")
    op.drop_table("metric_points")
    op.drop_table("jobs")
