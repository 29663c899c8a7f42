"""Log retention: when a job's archived log was deleted.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_logs") as batch:
        batch.add_column(sa.Column("pruned_at", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("job_logs") as batch:
        batch.drop_column("pruned_at")
