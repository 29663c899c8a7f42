"""Substring search over the jobs' search text, backed by an index on both databases: SQLite's FTS5 with the
trigram tokenizer (table jobs_search, kept in step by triggers) and PostgreSQL's pg_trgm GIN index. Both
answer LIKE '%term%' from the index, so search means the same thing everywhere."""

from __future__ import annotations

from typing import Any

from sqlalchemy import column, literal_column, select, table
from sqlalchemy.orm import Session

from services.store.orm import Job

_FTS = table("jobs_search", column("search_text"))
# A term found in more jobs than this is checked row by row along the page's sort order (a page then reads
# about page size / share of matching jobs rows) instead of gathering every match from the index first.
COMMON_AFTER = 2000


def like_pattern(term: str) -> str:
    return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fts_match(term: str) -> Any:
    # A quoted phrase of the trigram tokenizer is a substring match served by the index; LIKE with an
    # ESCAPE clause is not (FTS5 then reads every row), and terms under 3 characters have no trigram.
    phrase = '"' + term.lower().replace('"', '""') + '"'
    return select(literal_column("rowid")).select_from(_FTS).where(literal_column("jobs_search").op("MATCH")(phrase))


def term_filter(session: Session, term: str) -> Any:
    """A WHERE clause for one search word in a sorted, paged view. On SQLite a common word (in more than
    COMMON_AFTER jobs) is tested on each row the sort order walks, since a page needs only page size / share of
    matching jobs rows; a rare word's jobs are taken from the index (read once, here, at most COMMON_AFTER
    entries). PostgreSQL's planner weighs this itself from the trigram statistics."""
    if session.get_bind().dialect.name != "sqlite" or len(term) < 3:
        return matches(session.get_bind().dialect.name, term)
    ids = session.execute(_fts_match(term).limit(COMMON_AFTER + 1)).scalars().all()
    if len(ids) > COMMON_AFTER:
        return Job.search_text.like(like_pattern(term), escape="\\")
    return Job.id.in_(ids)


def matches(dialect: str, term: str) -> Any:
    """A WHERE clause: the job's search text contains `term` (case-insensitive), from the index."""
    if dialect == "sqlite" and len(term) >= 3:
        return Job.id.in_(_fts_match(term))
    return Job.search_text.like(like_pattern(term), escape="\\")
