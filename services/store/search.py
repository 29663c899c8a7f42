"""Substring search over the jobs' search text, backed by an index on both databases: SQLite's FTS5 with the
trigram tokenizer (table jobs_search, kept in step by triggers) and PostgreSQL's pg_trgm GIN index. Both
answer LIKE '%term%' from the index, so search means the same thing everywhere."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import column, exists, false, func, literal_column, select, table, text
from sqlalchemy.orm import Session

from services.store.orm import Job

_FTS = table("jobs_search", column("rowid"), column("search_text"))
_FTS_MATCH = literal_column("jobs_search").op("MATCH")
# A term found in more jobs than this is checked row by row along the page's sort order (a page then reads
# about page size / share of matching jobs rows) instead of gathering every match from the index first.
COMMON_AFTER = 2000
# Up to this many matches, the newest-first search takes a term's jobs from the index in one go (about 0.3 µs
# each, then one id lookup per job in the slice asked for): cheaper than walking rows for a term in a few percent.
RARE_UP_TO = 50_000
# How many of a section's newest jobs the newest-first search reads row by row before it asks the index for
# the older ones (3+ characters), or stops (1–2 characters, which have no trigram: the rest would be a scan).
WALK = 20_000
SHORT_WALK = 2_000


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
    """How many of the newest jobs match (at most the number asked for) and, unless only counted, their ids,
    newest first. complete=False: a 1–2 character term of which only the newest SHORT_WALK jobs were read (there
    may be older matches)."""

    n: int
    ids: list[int] = field(default_factory=list)
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
        self._rare: str | None = None  # the newest matches' ids as one JSON text
        self._found = 0
        self._read_up_to: int | None = None  # how many ids were asked for (one more, to know if there are more)
        if not self.sqlite and not self.nothing:
            # psycopg prepares a statement run 5 times; PostgreSQL then plans it once for any pattern, and for a
            # LIKE pattern it cannot see, that plan ANDs the trigram index with the slice's: for a term in every
            # job, one owner's count read all 300,000 matches (55 ms a section instead of 7). Planned for each
            # pattern instead (under 1 ms), for this search's transaction only.
            session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))

    def _read(self, up_to: int) -> None:
        # Newest first, as one JSON text handed back as one parameter: a row (or a bound parameter) per id costs
        # more in Python than the index lookup itself.
        # (In rowid order: FTS5 answers a rare phrase several times faster forwards than backwards.)
        first = _fts_match(self.term).limit(up_to + 1).subquery()
        self._rare = self.s.execute(select(func.json_group_array(first.c.rowid))).scalar() or "[]"
        self._found, self._read_up_to = len(json.loads(self._rare)), up_to

    def rare(self, up_to: int | None = None) -> Any | None:
        """A WHERE clause for the term's jobs when there are at most `up_to` (RARE_UP_TO by default), else None;
        read from the index at most twice per instance (first COMMON_AFTER, then RARE_UP_TO). SQLite and 3+
        characters only."""
        if self.nothing:
            return false()
        if not self.sqlite or len(self.term) < 3:
            return None
        up_to = min(RARE_UP_TO, RARE_UP_TO if up_to is None else up_to)
        if self._read_up_to is None or (self._found > self._read_up_to and up_to > self._read_up_to):
            self._read(COMMON_AFTER if self._read_up_to is None and up_to <= COMMON_AFTER else up_to)
        if self._found > min(up_to, self._read_up_to or 0):
            return None
        return Job.id.in_(select(literal_column("value")).select_from(func.json_each(self._rare)))

    def ids(self, where: Sequence[Any], need: int, bounded: bool = True) -> Newest:
        """Up to `need` ids of jobs satisfying `where` that hold the term, newest first. bounded=False: a 1–2
        character term is looked for in every job (a scan), not only in the newest SHORT_WALK."""
        return self._find(where, need, bounded, count=False)

    def count(self, where: Sequence[Any], need: int) -> Newest:
        """How many jobs satisfying `where` hold the term, counting no further than `need`."""
        return self._find(where, need, True, count=True)

    def _find(self, where: Sequence[Any], need: int, bounded: bool, count: bool) -> Newest:
        if need <= 0 or self.nothing:
            return Newest(0)
        short = len(self.term) < 3
        walk = SHORT_WALK if short else WALK
        if not short and self.sqlite and (few := self.rare(COMMON_AFTER)) is not None:  # a look-up for each
            return Newest(0) if self._found == 0 else self._take(self._newest(select(Job.id).where(*where, few),
                                                                               need), count)
        if not short and self.sqlite and self._ids_first(need):
            # Sparse among the newest jobs: a short walk (the slice may hold many, e.g. one owner's own name),
            # then the older ones by their ids.
            walk = min(WALK, 4 * need)
        if short and not bounded:  # no trigram to look up: a scan, as far as it must
            return self._take(self._newest(select(Job.id).where(*where, self._like()), need), count)
        if not short and not self.sqlite:
            if count:  # in no order: PostgreSQL's planner takes the trigram index or a scan that stops early
                return self._take(select(Job.id).where(*where, self._like()).limit(need), count)
            # Newest first: a short walk finds a common term (the planner's choice for one owner's section was
            # not always the walk); the older matches are then left to the planner and the trigram index.
            walk = min(WALK, 4 * need)
        recent = select(Job.id, Job.search_text).where(*where).order_by(Job.id.desc()).limit(walk).subquery()
        # No ORDER BY outside: both databases stream the inner walk in its order, so LIMIT stops it early.
        found = self._take(select(recent.c.id).where(
            recent.c.search_text.like(like_pattern(self.term), escape="\\")).limit(need), count)
        if found.n >= need:
            return found
        oldest = self.s.execute(select(Job.id).where(*where).order_by(Job.id.desc()).offset(walk - 1).limit(1)
                                ).scalar()
        if oldest is None:  # the walk read the whole slice
            return found
        if short:
            return Newest(found.n, found.ids, complete=False)
        if not self.sqlite:
            older = self._take(self._newest(select(Job.id).where(*where, Job.id < oldest, self._like()),
                                            need - found.n), count)
            return Newest(found.n + older.n, found.ids + older.ids)
        if (rare := self.rare()) is not None:  # in a few percent of the jobs: the older ones among them
            older = self._take(self._newest(select(Job.id).where(*where, Job.id < oldest, rare), need - found.n),
                               count)
            return Newest(found.n + older.n, found.ids + older.ids)
        # The older matches from the index, newest first: FTS5 leads and each match's row is looked up by id (a
        # join would let SQLite walk the slice's index instead and probe FTS5 per row).
        rest = self._take(select(_FTS.c.rowid).where(
            _FTS_MATCH(_phrase(self.term)), _FTS.c.rowid < oldest,
            exists(select(literal_column("1")).where(Job.id == _FTS.c.rowid, *where)),
        ).order_by(_FTS.c.rowid.desc()).limit(need - found.n), count)
        return Newest(found.n + rest.n, found.ids + rest.ids)

    def _ids_first(self, need: int) -> bool:
        """Whether the term is in at most RARE_UP_TO jobs and, by how far back its newest COMMON_AFTER + 1 matches
        reach, a walk would read more than WALK rows to find `need` of them."""
        newest = _fts_match(self.term).order_by(_FTS.c.rowid.desc()).limit(COMMON_AFTER + 1).subquery()
        reach = self.s.execute(select(func.max(newest.c.rowid) - func.min(newest.c.rowid) + 1)).scalar() or 1
        share = (COMMON_AFTER + 1) / reach
        return need / share > WALK and self.rare() is not None

    def _like(self) -> Any:
        return Job.search_text.like(like_pattern(self.term), escape="\\")

    @staticmethod
    def _newest(stmt: Any, need: int) -> Any:
        return stmt.order_by(Job.id.desc()).limit(need)

    def _take(self, stmt: Any, count: bool) -> Newest:
        if count:
            return Newest(self.s.execute(select(func.count()).select_from(stmt.subquery())).scalar() or 0)
        ids = list(self.s.execute(stmt).scalars())
        return Newest(len(ids), ids)
