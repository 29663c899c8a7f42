"""An index for substring search: FTS5 trigram table on SQLite, pg_trgm GIN index on PostgreSQL.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQLITE = [
    "CREATE VIRTUAL TABLE jobs_search USING fts5(search_text, content='jobs', content_rowid='id', "
    "tokenize='trigram')",
    "CREATE TRIGGER jobs_search_insert AFTER INSERT ON jobs BEGIN "
    "INSERT INTO jobs_search(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER jobs_search_delete AFTER DELETE ON jobs BEGIN "
    "INSERT INTO jobs_search(jobs_search, rowid, search_text) VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER jobs_search_update AFTER UPDATE OF search_text ON jobs BEGIN "
    "INSERT INTO jobs_search(jobs_search, rowid, search_text) VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO jobs_search(rowid, search_text) VALUES (new.id, new.search_text); END",
    "INSERT INTO jobs_search(jobs_search) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE:
            op.execute(statement)
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_jobs_search_trgm ON jobs USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("jobs_search_insert", "jobs_search_delete", "jobs_search_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE jobs_search")
    else:
        op.execute("DROP INDEX ix_jobs_search_trgm")
