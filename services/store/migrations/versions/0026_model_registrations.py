"""Model registrations (issue 21): each "Register model" of a finished job, pending until its MLflow model version
is made (done) or it failed, with the registration id that tags the version so a retry never makes a second one.

Revision ID: 0026
Revises: 0025
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_registrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("alias", sa.String(255)),
        sa.Column("paths", sa.JSON, nullable=False),
        sa.Column("tracking_uri", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("version", sa.String(32)),
        sa.Column("model_url", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", UTCDateTime()),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_registrations_job", "model_registrations", ["job_id", "id"])
    op.create_index("ix_model_registrations_status", "model_registrations", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_model_registrations_status", table_name="model_registrations")
    op.drop_index("ix_model_registrations_job", table_name="model_registrations")
    op.drop_table("model_registrations")
