"""API tokens expire: `expires_at` on every token. Tokens made before this revision get their creation time plus
365 days (the default of settings.token_max_days), so none of them stops working on the day of the upgrade.

Revision ID: 0016
Revises: 0015
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from services.store.orm import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

EXISTING_LIFETIME = timedelta(days=365)


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires_at", UTCDateTime, nullable=True))
    # Computed in Python through the column type, not in SQL: SQLite keeps these as text, PostgreSQL as
    # timestamptz, and the type already knows both. A portal has a few tokens per user, not millions.
    tokens = sa.table("api_tokens", sa.column("id", sa.Integer), sa.column("created_at", UTCDateTime),
                      sa.column("expires_at", UTCDateTime))
    bind = op.get_bind()
    rows = bind.execute(sa.select(tokens.c.id, tokens.c.created_at).where(tokens.c.expires_at.is_(None))).all()
    for token_id, created_at in rows:
        bind.execute(sa.update(tokens).where(tokens.c.id == token_id)
                     .values(expires_at=created_at + EXISTING_LIFETIME))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=UTCDateTime, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
