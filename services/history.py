"""Experiment history for data leads: filtered, sorted, paged queries over every job a user may see, a
summary of the filtered set, tags and notes, and the rows of a streamed export (services/history_export.py writes
them); filters on final metric values are services/history_metric_filter.py."""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import and_, case, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.auth import may_act
from services.history_export import EXPORT_COLUMNS, EXPORT_FIELDS, csv_chunks, export_row, parquet_chunks
from services.history_metric_filter import MetricCondition, metric_conditions, parse_metric_filter
from services.job_text import search_text
from services.jobs import JobService, to_view
from services.models import JobStatus, JobView, NotFound, StatusGroup, User, ValidationProblem
from services.store.orm import Job, JobFinalMetric, JobTotals, request_number
from services.store.search import term_filter

SortKey = Literal["id", "name", "owner", "status", "created_at", "gpus", "final_loss", "cost", "gpu_hours",
                  "learning_rate", "epochs", "batch_size", "runtime_seconds", "final_metric"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
NULLABLE_SORTS = frozenset({"final_loss", "cost", "gpu_hours", "learning_rate", "epochs", "batch_size",
                            "runtime_seconds"})
TAG = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,39}$")
MAX_TAGS = 20
MAX_NOTE = 5000
# Re-exported: the download route and the tests take the export's writers from here.
__all__ = ["EXPORT_COLUMNS", "HistoryQuery", "HistoryService", "Summary", "csv_chunks", "parquet_chunks"]


# The names people type for the parameters a history row shows, with the name the search text holds.
PARAM_NAMES = {"lr": "learning_rate", "learning_rate": "learning_rate", "bs": "batch_size", "batch": "batch_size",
               "batch_size": "batch_size", "epoch": "epochs", "epochs": "epochs"}
_PARAM_WORD = re.compile(r"^([a-z_]+)=(.+)$")


def _search_word(s: Session, word: str) -> list[Any]:
    """The conditions for one search word. A numeric parameter written name=value, under its name or short name
    (`lr=1e-3`, `bs=32`, `epochs=10`), finds jobs submitted with exactly that value: the search text holds it as
    `learning_rate=0.001` (so the index still narrows), and the request's number tells 0.001 from 0.0015."""
    found = _PARAM_WORD.match(word.lower())
    key = PARAM_NAMES.get(found.group(1)) if found else None
    if found is None or key is None:
        return [term_filter(s, word)]
    try:
        value = float(found.group(2))
    except ValueError:
        return [term_filter(s, f"{key}={found.group(2)}")]
    if not math.isfinite(value):
        return [term_filter(s, word)]
    # As the request holds it: the learning rate is a float (0.001, 1e-05), epochs and batch size are integers.
    written = str(int(value)) if key != "learning_rate" and value.is_integer() else str(value)
    return [term_filter(s, f"{key}={written}"), request_number(s.get_bind().dialect.name, key) == value]


class HistoryQuery(BaseModel):
    """A history view: what the page's URL holds, validated at the edge."""

    model_config = ConfigDict(extra="ignore")

    search: str = Field(default="", max_length=200)
    status: list[StatusGroup] = Field(default_factory=list)
    owner: str = Field(default="", max_length=255)
    date_from: date | None = None
    date_to: date | None = None
    gpus_min: int | None = Field(default=None, ge=0, le=1024)
    gpus_max: int | None = Field(default=None, ge=0, le=1024)
    tag: str = Field(default="", max_length=40)
    template: str = Field(default="", max_length=100)
    sweep: int | None = Field(default=None, ge=1, le=2**62, description="Only the trials of this sweep")
    # Whose jobs: "mine", "team" (the user's teams') or "all" (every job the user may see; services/teams.py).
    scope: Literal["mine", "team", "all"] = "all"
    sort: SortKey = "id"
    # The final metric a sort "final_metric" orders by (accuracy, eval_loss, ...).
    metric: str = Field(default="", max_length=64)
    # Conditions on final metric values: "accuracy > 0.9 and eval_loss < 0.3" (services/history_metric_filter.py).
    metric_filter: str = Field(default="", max_length=500)
    descending: bool = True
    page: int = Field(default=1, ge=1, le=1_000_000)
    page_size: int = Field(default=50, ge=1, le=500)

    @field_validator("search", "owner", "tag", "template", "metric", "metric_filter")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        # PostgreSQL refuses NUL in text; a pasted no-break space or joiner is ordinary text and stays.
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ValueError("must not hold control characters")
        return value

    @field_validator("metric_filter")
    @classmethod
    def _readable_metric_filter(cls, value: str) -> str:
        parse_metric_filter(value)  # its ValueError is the field's sentence
        return value.strip()

    def conditions(self) -> list[MetricCondition]:
        return parse_metric_filter(self.metric_filter)

    @model_validator(mode="after")
    def _metric_for_its_sort(self) -> HistoryQuery:
        if self.sort == "final_metric" and not self.metric.strip():
            raise ValueError("metric: a sort by a final metric needs the metric's name")
        if self.sort != "final_metric":
            self.metric = ""
        return self


# Sorts whose index (migrations 0011, 0014) holds the owner, status, GPUs and template columns: every sort by a
# result or parameter has one.
WALKED_SORTS = NULLABLE_SORTS


FILTER_FIELDS = {"search", "status", "owner", "date_from", "date_to", "gpus_min", "gpus_max", "tag", "template",
                 "metric_filter", "sweep", "scope"}
SUMMARY_CACHE_SECONDS = 120
SUMMARY_CACHE_SIZE = 256
# The final metrics a history can be sorted by: kept this long per viewer (new names appear as runs end).
METRIC_NAMES_SECONDS = 60
MAX_METRIC_NAMES = 200
# Series that count progress rather than measure a result; the final loss has its own sort.
NOT_RESULTS = frozenset({"epoch", "step", "global_step", "loss"})
# Every distinct name in (name, value, job_id) order: one index probe per name, not a scan of every row.
_DISTINCT_NAMES = text(
    "WITH RECURSIVE names(name) AS (SELECT min(name) FROM job_final_metrics UNION ALL "
    "SELECT (SELECT min(name) FROM job_final_metrics WHERE name > names.name) FROM names "
    "WHERE names.name IS NOT NULL) SELECT name FROM names WHERE name IS NOT NULL LIMIT :limit"
)


def _needs_jobs(q: HistoryQuery) -> bool:
    """Whether the filter has parts the running totals do not know (text, tags, dates, metric values)."""
    return bool(q.search.strip() or q.tag or q.date_from or q.date_to or q.metric_filter or q.sweep)


@dataclass(frozen=True)
class Summary:
    jobs: int
    succeeded: int
    gpu_hours: float
    cost: float

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.jobs if self.jobs else None


class HistoryService:
    def __init__(self, jobs: JobService):
        self.jobs = jobs
        self.sessions: sessionmaker[Session] = jobs.sessions
        self._scanned: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], float, Summary]] = OrderedDict()
        self._metric_names: dict[str | None, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def _owners(self, user: User, q: HistoryQuery) -> set[str]:
        """The owner conditions of a view: the filter's, and the user's own name under "My jobs". Whose jobs the
        other scopes show, teammates' included where others' jobs are hidden, is scope_where's to say (_scope)."""
        mine = user.name if q.scope == "mine" else None
        return {o for o in (q.owner or None, mine) if o is not None}

    def _scope(self, user: User, q: HistoryQuery) -> list[Any]:
        """The team conditions of a view (a team's jobs; everyone's but hidden teams'): on the jobs only, as the
        running totals and final-metric rows have no team."""
        return [] if q.scope == "mine" else self.jobs.teams.scope_where(user, q.scope)

    def _common_filters(self, table: Any, user: User, q: HistoryQuery, in_sort_index: bool = False) -> list[Any]:
        """Conditions on owner, status group, GPUs and template: on the jobs, on the final-metric rows or on the
        running totals, which all have those columns. in_sort_index: owner and template are written so that no index is
        chosen for them (`owner || ''`): the page then walks the sort's index, which holds both columns and
        tests them there (see _walk_sort_index)."""
        owner_col = table.owner.concat("") if in_sort_index else table.owner
        template_col = table.template.concat("") if in_sort_index else table.template
        found = [owner_col == owner for owner in self._owners(user, q)]
        if q.status:
            found.append(table.status_group.in_([g.value for g in q.status]))
        if q.gpus_min is not None:
            found.append(table.gpus >= q.gpus_min)
        if q.gpus_max is not None:
            found.append(table.gpus <= q.gpus_max)
        if q.template:
            found.append(template_col == q.template)
        return found

    def _filtered(self, s: Session, user: User, q: HistoryQuery, in_sort_index: bool = False,
                  common: bool = True, page_end: int | None = None, skip_metric: str = "", job_id: Any = Job.id) -> Any:
        """The filtered view (common=False: without the filters _common_filters writes). page_end: how far a page
        reads along the view's order (None: all of it); skip_metric: a metric whose conditions the caller tests;
        job_id: the column the metric conditions test (a walked index's copy of the id, tested before the row is
        read)."""
        stmt = select(Job).where(*self._scope(user, q))
        conditions = [c for c in q.conditions() if c.name != skip_metric]
        if conditions:
            everyone = int(s.scalar(select(func.sum(JobTotals.jobs))) or 0)
            stmt = stmt.where(*metric_conditions(s, job_id, conditions, page_end, everyone))
        if common:
            stmt = stmt.where(*self._common_filters(Job, user, q, in_sort_index))
        if q.date_from:
            stmt = stmt.where(Job.created_at >= datetime.combine(q.date_from, time.min, UTC))
        if q.date_to:
            stmt = stmt.where(Job.created_at < datetime.combine(q.date_to + timedelta(days=1), time.min, UTC))
        # Every word must match somewhere (name, owner, script, parameters, tags, note), from the search index.
        for word in q.search.split()[:8]:
            stmt = stmt.where(*_search_word(s, word))
        if q.tag:
            stmt = stmt.where(term_filter(s, q.tag))
        if q.sweep:  # a sweep's trials (the jobs' sweep index)
            stmt = stmt.where(Job.sweep_id == q.sweep)
        return stmt

    def _sort_column(self, q: HistoryQuery) -> Any:
        if q.sort in ("learning_rate", "epochs", "batch_size"):
            return request_number(self.sessions.kw["bind"].dialect.name, q.sort)
        return getattr(Job, q.sort)

    def _view(self, s: Session, user: User, q: HistoryQuery, page_end: int | None = None) -> Any:
        """The filtered view in its order (page_end: see _filtered)."""
        if q.sort == "final_metric":
            # Walks the metric's rows in (name, value, job_id) order, testing owner, status, GPUs and template
            # on their copies inside that index; a job's row is read only when it passes them. Only jobs that
            # reported the metric are listed.
            # Conditions on the sorted metric itself narrow the walk to a range of its values.
            fm = JobFinalMetric
            on = and_(fm.job_id == Job.id, fm.name == q.metric, *self._common_filters(fm, user, q),
                      *(c.sql(fm.value) for c in q.conditions() if c.name == q.metric))
            stmt = self._filtered(s, user, q, common=False, page_end=page_end, skip_metric=q.metric,
                                  job_id=fm.job_id).join(fm, on)
            if q.descending:
                return stmt.order_by(fm.value.desc(), fm.job_id.desc())
            return stmt.order_by(fm.value.asc(), fm.job_id.asc())
        return self._sorted(self._filtered(s, user, q, self._walk_sort_index(s, user, q), page_end=page_end), q)

    def _sorted(self, stmt: Any, q: HistoryQuery) -> Any:
        column = self._sort_column(q)
        if q.sort in NULLABLE_SORTS:
            # Sorting by a result leaves out the jobs that have none yet (running, never started): an index
            # walks the rest in order, where "NULLs last" would sort every row on each page view.
            stmt = stmt.where(column.is_not(None))
        order = column.desc() if q.descending else column.asc()
        return stmt.order_by(order, Job.id.desc() if q.descending else Job.id.asc())

    def page(self, user: User, q: HistoryQuery) -> list[JobView]:
        """One page of the filtered view, in its order (an index walk: it does not read the rest)."""
        return self.page_with_more(user, q)[0]

    def page_with_more(self, user: User, q: HistoryQuery) -> tuple[list[JobView], bool]:
        """One page, and whether another follows it (one row more is read to know)."""
        with self.sessions.begin() as s:
            stmt = self._view(s, user, q, page_end=q.page * q.page_size + 1)
            views = [to_view(j) for j in s.scalars(stmt.limit(q.page_size + 1).offset((q.page - 1) * q.page_size))]
        return views[: q.page_size], len(views) > q.page_size

    def _walk_sort_index(self, s: Session, user: User, q: HistoryQuery) -> bool:
        """Whether a page sorted by a result or parameter should walk that sort's index (which also holds
        owner and template) rather than let the planner pick the owner or template index and sort all of that
        owner's jobs. The running totals give the exact counts the planner lacks: walking reads about
        page end x all jobs / matching jobs index entries (~0.1 us each), the other way fetches and sorts
        every job of the owner or template (~2 us each)."""
        if s.get_bind().dialect.name != "sqlite":
            return False  # PostgreSQL tests filters only after fetching each row, and plans from its own statistics
        owners = self._owners(user, q)
        if q.sort not in WALKED_SORTS or _needs_jobs(q) or self._scope(user, q) or not (owners or q.template):
            return False
        matching = self._totals(s, user, q).jobs
        everyone = int(s.scalar(select(func.sum(JobTotals.jobs))) or 0)
        narrowest = min([self._totals(s, user, HistoryQuery(owner=o)).jobs for o in owners]
                        + ([self._totals(s, user, HistoryQuery(template=q.template)).jobs] if q.template else []))
        return q.page * q.page_size * everyone < 16 * matching * narrowest

    def summary(self, user: User, q: HistoryQuery) -> Summary:
        """Jobs, successes, GPU-hours and cost of the whole filtered set. Filters on owner, status, GPUs and
        template are answered from the running totals (a few hundred rows, whatever the number of jobs);
        text search, tags and dates need the jobs themselves."""
        scoped = self._scope(user, q)
        if not _needs_jobs(q) and not scoped:
            with self.sessions.begin() as s:
                return self._totals(s, user, q)
        # Adding up the jobs of a text search can take a second at a million jobs, and a page reruns on every
        # click (a selected row, the next page, another sort): keep the answer while the jobs are unchanged.
        # Any new, deleted, finished or re-costed job moves the totals of some status group; a tag or note edited
        # here clears the cache; one edited by another portal process shows within SUMMARY_CACHE_SECONDS.
        # A scoped view's answer depends on the viewer's teams too.
        teams = tuple(self.jobs.teams.team_names(user)) if scoped else ()
        key = (self.jobs.visible_owner(user, everyone=True), teams, q.model_dump_json(include=FILTER_FIELDS))
        with self.sessions.begin() as s:
            mark = tuple(tuple(row) for row in s.execute(
                select(JobTotals.status_group, func.sum(JobTotals.jobs), func.sum(JobTotals.succeeded),
                       func.sum(JobTotals.gpu_hours), func.sum(JobTotals.cost))
                .group_by(JobTotals.status_group).order_by(JobTotals.status_group)))
        now = monotonic()
        with self._lock:
            hit = self._scanned.get(key)
        if hit is not None and hit[0] == mark and now - hit[1] < SUMMARY_CACHE_SECONDS:
            return hit[2]
        result = self._summary_of_jobs(user, q)
        with self._lock:
            self._scanned[key] = (mark, now, result)
            self._scanned.move_to_end(key)
            while len(self._scanned) > SUMMARY_CACHE_SIZE:
                self._scanned.popitem(last=False)
        return result

    def final_metric_names(self, user: User) -> list[str]:
        """The final metrics reported by jobs this user may see, to sort by (the loss has its own sort; progress
        counters are no result): the first MAX_METRIC_NAMES by name, kept for METRIC_NAMES_SECONDS."""
        owner = self.jobs.visible_owner(user, everyone=True)
        now = monotonic()
        with self._lock:
            hit = self._metric_names.get(owner)
        if hit is not None and now - hit[0] < METRIC_NAMES_SECONDS:
            return hit[1]
        with self.sessions.begin() as s:
            if owner is None:
                names = list(s.scalars(_DISTINCT_NAMES, {"limit": MAX_METRIC_NAMES + len(NOT_RESULTS) + 1}))
            else:  # only what this user's own jobs reported (through the jobs' owner index)
                names = list(s.scalars(select(JobFinalMetric.name).join(Job, Job.id == JobFinalMetric.job_id)
                                       .where(Job.owner == owner).distinct()))
        result = sorted(n for n in names if n.strip() and n not in NOT_RESULTS)[:MAX_METRIC_NAMES]
        with self._lock:
            self._metric_names[owner] = (now, result)
        return result

    def export_metric_names(self, user: User, q: HistoryQuery) -> list[str]:
        """Every final metric reported by the jobs of this view, uncapped: an export's columns."""
        with self.sessions.begin() as s:
            if self.jobs.visible_owner(user, everyone=True) is None and not q.model_dump(include=FILTER_FIELDS,
                                                                                       exclude_defaults=True):
                return list(s.scalars(_DISTINCT_NAMES, {"limit": 1_000_000}))  # every job: one probe per name
            ids = self._filtered(s, user, q).with_only_columns(Job.id).scalar_subquery()
            return sorted(s.scalars(select(JobFinalMetric.name).where(JobFinalMetric.job_id.in_(ids)).distinct()))

    def templates_used(self, user: User) -> list[str]:
        """The template names on the jobs this user may see (from the running totals: no scan)."""
        stmt = select(JobTotals.template).where(JobTotals.template != "", JobTotals.jobs > 0).distinct()
        owner = self.jobs.visible_owner(user, everyone=True)
        if owner is not None:
            stmt = stmt.where(JobTotals.owner == owner)
        with self.sessions.begin() as s:
            return sorted(s.scalars(stmt))

    def _totals(self, s: Session, user: User, q: HistoryQuery) -> Summary:
        stmt = select(func.sum(JobTotals.jobs), func.sum(JobTotals.succeeded), func.sum(JobTotals.gpu_hours),
                      func.sum(JobTotals.cost)).where(*self._common_filters(JobTotals, user, q))
        n, ok, hours, cost = s.execute(stmt).one()
        # Sums of +x and -x as jobs change state leave float dust: round it off.
        return Summary(int(n or 0), int(ok or 0), round(float(hours or 0), 6), round(float(cost or 0), 6))

    def _summary_of_jobs(self, user: User, q: HistoryQuery) -> Summary:
        with self.sessions.begin() as s:
            sub = self._filtered(s, user, q).with_only_columns(Job.status, Job.gpu_hours, Job.cost).subquery()
            stmt = select(func.count(), func.sum(case((sub.c.status == JobStatus.SUCCEEDED.value, 1), else_=0)),
                          func.coalesce(func.sum(sub.c.gpu_hours), 0.0), func.coalesce(func.sum(sub.c.cost), 0.0))
            n, ok, hours, cost = s.execute(stmt).one()
        return Summary(int(n or 0), int(ok or 0), float(hours or 0), float(cost or 0))

    def rows(self, user: User, q: HistoryQuery, batch: int = 2000) -> Iterator[dict[str, Any]]:
        """Every row of the filtered view, in its order, fetched in batches (an export never holds them all)."""
        with self.sessions.begin() as s:
            # Plain rows of the exported columns: no ORM objects to build, no unused JSON to decode.
            stmt = self._view(s, user, q).with_only_columns(*EXPORT_FIELDS)
            for job in s.execute(stmt.execution_options(yield_per=batch)):
                yield export_row(job)

    def set_tags_note(self, user: User, job_id: int, tags: list[str], note: str) -> JobView:
        clean = sorted({t.strip().lower() for t in tags if t.strip()})
        bad = [t for t in clean if not TAG.match(t)]
        if bad:
            raise ValidationProblem({"tags": f"tags are short words of a-z, 0-9, '.', '_', ':' or '-': {bad[0]!r}"})
        if len(clean) > MAX_TAGS:
            raise ValidationProblem({"tags": f"at most {MAX_TAGS} tags"})
        if len(note) > MAX_NOTE:
            raise ValidationProblem({"note": f"at most {MAX_NOTE} characters"})
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is None or not may_act(user, job.owner):
                raise NotFound(f"Job {job_id} was not found.")
            job.tags, job.note = clean, note
            job.search_text = search_text(job.name, job.owner, job.request or {}, clean, note)
            s.flush()
            view = to_view(job)
        with self._lock:
            self._scanned.clear()  # a search for a tag or a note's words may count this job now, or not
        return view
