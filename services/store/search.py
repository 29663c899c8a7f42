"""Substring search over the jobs' search text, backed by an index on both databases: SQLite's FTS5 with the
trigram tokenizer (table jobs_search, kept in step by triggers) and PostgreSQL's pg_trgm GIN index. Both
answer LIKE '%term%' from the index, so search means the same thing everywhere."""

from __future__ import annotations

from typing import Any

from sqlalchemy import column, literal_column, select, table

from services.store.orm import Job

_FTS = table("jobs_search", column("search_text"))


def like_pattern(term: str) -> str:
    return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def matches(dialect: str, term: str) -> Any:
    """A WHERE clause: the job's search text contains `term` (case-insensitive)."""
    pattern = like_pattern(term)
    if dialect == "sqlite" and len(term) >= 3:
        # A quoted phrase of the trigram tokenizer is a substring match served by the index; LIKE with an
        # ESCAPE clause is not (FTS5 then reads every row), and terms under 3 characters have no trigram.
        phrase = '"' + term.lower().replace('"', '""') + '"'
        return Job.id.in_(select(literal_column("rowid")).select_from(_FTS)
                          .where(literal_column("jobs_search").op("MATCH")(phrase)))
    return Job.search_text.like(pattern, escape="\\")
