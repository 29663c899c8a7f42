"""Substring search over the jobs' search text, backed by an index on both databases: SQLite's FTS5 with the
trigram tokenizer (table jobs_search, kept in step by triggers) and PostgreSQL's pg_trgm GIN index. Both
answer LIKE '%term%' from the index, so search means the same thing everywhere."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import column, exists, false, func, literal_column, select, table
from sqlalchemy.orm import Session

from services.store.orm import Job

_FTS = table("jobs_search", column("rowid"), column("search_text"))
_FTS_MATCH = literal_column("jobs_search").op("MATCH")
# A term found in more jobs than this is checked row by row along the page's sort order (a page then reads
# about page size / share of matching jobs rows) instead of gathering every match from the index first.
COMMON_AFTER = 2000
# How many of a section's newest jobs the newest-first search reads row by row before it asks the index for
# the older ones (3+ characters), or stops (1–2 characters, which have no trigram: the rest would be a scan).
WALK = 10_000
SHORT_WALK = 5_000


def like_pattern(term: str) -> str:
    return "%" + term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phrase(term: str) -> str:
    # A quoted phrase of the trigram tokenizer is a substring match served by the index; LIKE with an
    # ESCAPE clause is not (FTS5 then reads every row), and terms under 3 characters have no trigram.
    return '"' + term.lower().replace('"', '""') + '"'


def _fts_match(term: str) -> Any:
    return select(_FTS.c.rowid).where(_FTS_MATCH(_phrase(term)))


def _rare_ids(session: Session, term: str) -> list[int] | None:
    """Every job id holding `term` when there are at most COMMON_AFTER (SQLite, 3+ characters: read once from
    the index, at most COMMON_AFTER + 1 entries); None for a common term or where the index cannot say."""
    if session.get_bind().dialect.name != "sqlite" or len(term) < 3:
        return None
    ids = list(session.execute(_fts_match(term).limit(COMMON_AFTER + 1)).scalars())
    return ids if len(ids) <= COMMON_AFTER else None


def term_filter(session: Session, term: str) -> Any:
    """A WHERE clause for one search word in a sorted, paged view. On SQLite a common word (in more than
    COMMON_AFTER jobs) is tested on each row the sort order walks, since a page needs only page size / share of
    matching jobs rows; a rare word's jobs are taken from the index (read once, here, at most COMMON_AFTER
    entries). PostgreSQL's planner weighs this itself from the trigram statistics."""
    if session.get_bind().dialect.name != "sqlite" or len(term) < 3:
        return matches(session.get_bind().dialect.name, term)
    ids = _rare_ids(session, term)
    return Job.search_text.like(like_pattern(term), escape="\\") if ids is None else Job.id.in_(ids)


def matches(dialect: str, term: str) -> Any:
    """A WHERE clause: the job's search text contains `term` (case-insensitive), from the index."""
    if dialect == "sqlite" and len(term) >= 3:
        return Job.id.in_(_fts_match(term))
    return Job.search_text.like(like_pattern(term), escape="\\")


@dataclass(frozen=True)
class Newest:
    """The newest matching job ids, newest first. complete=False: a 1–2 character term of which only the
    newest SHORT_WALK jobs were read (there may be older matches)."""

    ids: list[int]
    complete: bool = True


class NewestFirst:
    """One search term's newest matches in any slice of the jobs (a dashboard section, an owner), without
    reading every match: what a listing of N jobs or a count that stops at N needs, whatever the history's
    size. A rare term's jobs come from the index (asked once per instance); a common one's are the first
    matching rows along the (filters, id) index, newest first; a term in between gets its older matches from
    the index, newest first, after a bounded walk."""

    def __init__(self, session: Session, term: str) -> None:
        self.s = session
        self.term = term
        self.sqlite = session.get_bind().dialect.name == "sqlite"
        # In no job's text (and FTS5 and PostgreSQL refuse a NUL): such a term matches nothing.
        self.nothing = any(unicodedata.category(c) == "Cc" for c in term)
        self._rare: list[int] | None = None
        self._asked = False

    def rare(self) -> Any | None:
        """A WHERE clause for a rare term's jobs (at most COMMON_AFTER, read from the index once), else None."""
        if self.nothing:
            return false()
        if not self._asked:
            self._rare, self._asked = _rare_ids(self.s, self.term), True
        if self._rare is None:
            return None
        # One JSON parameter instead of up to COMMON_AFTER bound ones, which SQLAlchemy renders per statement.
        return Job.id.in_(select(literal_column("value")).select_from(func.json_each(json.dumps(self._rare))))

    def ids(self, where: Sequence[Any], need: int, bounded: bool = True) -> Newest:
        """Up to `need` ids of jobs satisfying `where` that hold the term, newest first. bounded=False: a 1–2
        character term is looked for in every job (a scan), not only in the newest SHORT_WALK."""
        if need <= 0 or self.nothing:
            return Newest([])
        short = len(self.term) < 3
        if not short and (rare := self.rare()) is not None:
            return Newest(self._scalars(select(Job.id).where(*where, rare), need))
        if not short and not self.sqlite:  # PostgreSQL's planner picks the trigram index or the walk itself
            return Newest(self._scalars(select(Job.id).where(*where, self._like()), need))
        if short and not bounded:
            return Newest(self._scalars(select(Job.id).where(*where, self._like()), need))
        walk = SHORT_WALK if short else WALK
        recent = select(Job.id, Job.search_text).where(*where).order_by(Job.id.desc()).limit(walk).subquery()
        # No ORDER BY outside: both databases stream the inner walk in its order, so LIMIT stops it early.
        found = list(self.s.execute(
            select(recent.c.id).where(recent.c.search_text.like(like_pattern(self.term), escape="\\")).limit(need)
        ).scalars())
        if len(found) >= need:
            return Newest(found)
        oldest = self.s.execute(select(Job.id).where(*where).order_by(Job.id.desc()).offset(walk - 1).limit(1)
                                ).scalar()
        if oldest is None:  # the walk read the whole slice
            return Newest(found)
        if short:
            return Newest(found, complete=False)
        # The older matches from the index, newest first: FTS5 leads and each match's row is looked up by id (a
        # join would let SQLite walk the slice's index instead and probe FTS5 per row).
        rest = select(_FTS.c.rowid).where(
            _FTS_MATCH(_phrase(self.term)), _FTS.c.rowid < oldest,
            exists(select(literal_column("1")).where(Job.id == _FTS.c.rowid, *where)),
        ).order_by(_FTS.c.rowid.desc()).limit(need - len(found))
        return Newest(found + list(self.s.execute(rest).scalars()))

    def _like(self) -> Any:
        return Job.search_text.like(like_pattern(self.term), escape="\\")

    def _scalars(self, stmt: Any, need: int) -> list[int]:
        return list(self.s.execute(stmt.order_by(Job.id.desc()).limit(need)).scalars())
