"""Filters on final metric values, as a data lead writes them: `accuracy > 0.9 and eval_loss < 0.3`.

A condition is `<metric> <operator> <number>`, with the operators >, >=, <, <=, = (or ==) and !=; conditions are
combined with `and` (or a comma). A name may carry MLflow's `metric.`/`metrics.` prefix or the page's `final ` one;
MLflow's prefixes for what is not a metric (`params.`, `tags.`, `attributes.`) get a sentence naming the search box
or the filter that finds it (read as a metric's name, they would match no job and say nothing). A name
may be quoted with backticks or double quotes when it holds spaces or operator characters (`eval/loss` needs
none). A condition holds for a job that reported the metric with a final value that passes it: a job without
that metric never matches, `!=` included (as in MLflow).

The conditions are answered from table job_final_metrics: its (name, value, ...) index gives a range of the
jobs that pass a condition in value order, its primary key (job_id, name) tells whether one job does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from services.store.orm import JobFinalMetric

MAX_CONDITIONS = 8
MAX_NAME = 64  # the store's column
# A summary counts its conditions' ranges this far to find the rarest (beyond it, any will do).
MAX_COUNTED = 100_000
# What reading a passing job's row and sorting it costs against one primary-key probe of a walked job (measured on
# SQLite at 1M jobs).
DRIVE_COST = 8
OPERATORS = ("!=", ">=", "<=", "==", ">", "<", "=")
OPERATOR_LIST = ">, >=, <, <=, =, !="
# Where a filter splits into conditions: `and`, a comma, `&&` or `;`, outside a quoted name.
_PARTS = re.compile(r"`[^`]*`|\"[^\"]*\"|((?:^|\s+)and(?:\s+|$)|\s*(?:,|&&|;)\s*)", re.IGNORECASE)
_OR = re.compile(r"`[^`]*`|\"[^\"]*\"|((?:^|\s+)or(?:\s+|$)|\|\|)", re.IGNORECASE)
_CONDITION = re.compile(
    r"^(?:final\s+|metrics?\.)?(?:`(?P<bq>[^`]*)`|\"(?P<dq>[^\"]*)\"|(?P<name>[^\s<>=!~`\"]+))"
    r"\s*(?P<op>[<>=!~^]*)\s*(?P<value>.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class MetricCondition:
    name: str
    op: str  # one of > >= < <= = !=
    value: float

    def __str__(self) -> str:
        name = self.name if re.fullmatch(r"[A-Za-z0-9_./:-]+", self.name) else f"`{self.name}`"
        return f"{name} {self.op} {self.value:g}"

    def sql(self, column: Any) -> Any:
        """This condition on a value column."""
        return {">": column > self.value, ">=": column >= self.value, "<": column < self.value,
                "<=": column <= self.value, "=": column == self.value, "!=": column != self.value}[self.op]


# MLflow's other identifier types, and where the portal finds what they name: a sentence, not a silent "no jobs".
_NOT_METRIC = re.compile(r"^(?P<kind>params?|parameters?|tags?|attributes?|attr|datasets?)\.(?P<key>[^\s<>=!]*)"
                         r"\s*(?P<op>[<>=!~]*)\s*(?P<value>.*)$", re.IGNORECASE)


def _not_a_metric(part: str) -> str | None:
    found = _NOT_METRIC.match(part)
    if found is None:
        return None
    kind = found.group("kind").lower()
    key, value = found.group("key").strip("`\""), found.group("value").strip().strip("'\"")
    if kind.startswith("param"):
        example = f"{key}={value}" if key and value and found.group("op") in ("=", "==") else "learning_rate=0.003"
        return (f"\"{part}\" is about a parameter, and the metric filter compares final metrics only: find jobs by a "
                f"parameter with the search box (search=), written key=value as submitted, e.g. {example} "
                "(it matches that text; there is no < or > for parameters)")
    if kind.startswith("tag"):
        return (f"\"{part}\" is about a tag, and the metric filter compares final metrics only: use the Tag filter "
                "(tag=) or the search box")
    return (f"\"{part}\" is about a job's attributes, and the metric filter compares final metrics only: use the "
            "filters beside it (status, owner, tag, template, dates, GPUs) or the search box (name, owner, script)")


def _split(text: str, pattern: re.Pattern[str]) -> list[str]:
    parts, start = [], 0
    for found in pattern.finditer(text):
        if found.group(1) is not None:
            parts.append(text[start:found.start()])
            start = found.end()
    return [*parts, text[start:]]


def parse_metric_filter(text: str) -> list[MetricCondition]:
    """The conditions of a filter; a ValueError with a sentence a person can act on for one that is not."""
    text = text.strip()
    if not text:
        return []
    if len(_split(text, _OR)) > 1:
        raise ValueError("conditions are combined with 'and' only ('or' is not supported)")
    parts = [p.strip() for p in _split(text, _PARTS)]
    if len(parts) > MAX_CONDITIONS:
        raise ValueError(f"at most {MAX_CONDITIONS} conditions")
    return [_condition(p) for p in parts]


def _condition(part: str) -> MetricCondition:
    example = "write it as a metric, an operator and a number, e.g. accuracy > 0.9"
    if not part:
        raise ValueError(f"a condition is missing around 'and' or ','; {example}")
    if (other := _not_a_metric(part)) is not None:
        raise ValueError(other)
    found = _CONDITION.match(part)
    if found is None:
        raise ValueError(f"'{part}' is not a condition: {example}")
    name = found.group("bq") if found.group("bq") is not None else found.group("dq") or found.group("name") or ""
    op, raw = found.group("op"), found.group("value").strip()
    if not name.strip():
        raise ValueError(f"'{part}' names no metric: {example}")
    if len(name) > MAX_NAME:
        raise ValueError(f"a metric's name has at most {MAX_NAME} characters: '{name[:20]}…'")
    if not op:
        raise ValueError(f"'{part}' has no comparison: {example} (operators {OPERATOR_LIST})")
    if op not in OPERATORS:
        raise ValueError(f"unknown operator '{op}' in '{part}': use one of {OPERATOR_LIST}")
    if not raw:
        raise ValueError(f"'{part}' needs a number after '{op}'")
    try:
        value = float(raw.strip("'\""))
    except ValueError:
        raise ValueError(f"'{raw}' in '{part}' is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"'{part}' compares with {raw}: final metrics are finite numbers")
    return MetricCondition(name, "=" if op == "==" else op, value)


def by_metric(conditions: list[MetricCondition]) -> dict[str, list[MetricCondition]]:
    """The conditions grouped by metric: a range such as 0.8 < accuracy < 0.9 is one lookup."""
    out: dict[str, list[MetricCondition]] = {}
    for c in conditions:
        out.setdefault(c.name, []).append(c)
    return out


def passes(job_id: Any, name: str, conditions: list[MetricCondition], dialect: str) -> Any:
    """Whether the job `job_id` (a column) reported `name` with a value that passes every condition on it: one
    probe of index ix_job_final_metrics_probe (job_id, name, value), which holds the value. SQLite would pick the
    primary key (job_id, name) and read the row for its value: there the name is written so that the key cannot
    be used for it (`name || ''`), and the index that holds the value is chosen."""
    f = JobFinalMetric.__table__.alias()
    name_col = f.c.name.concat("") if dialect == "sqlite" else f.c.name
    # SELECT 1, not EXISTS' usual SELECT *: SQLite counts an index covering only for the columns selected.
    return select(literal(1)).where(f.c.job_id == job_id, name_col == name,
                                    *(c.sql(f.c.value) for c in conditions)).exists()


def passing_ids(name: str, conditions: list[MetricCondition]) -> Any:
    """The ids of the jobs that pass the conditions on `name`: a range of the (name, value) index."""
    f = JobFinalMetric.__table__.alias()
    return select(f.c.job_id).where(f.c.name == name, *(c.sql(f.c.value) for c in conditions))


def count_passing(name: str, conditions: list[MetricCondition], limit: int) -> Any:
    """How many jobs pass the conditions on `name`, counted up to `limit` only (a bounded index range)."""
    return select(func.count()).select_from(passing_ids(name, conditions).limit(limit).subquery())


def metric_conditions(s: Session, job_id: Any, conditions: list[MetricCondition], page_end: int | None,
                      jobs: int) -> list[Any]:
    """The WHERE conditions that keep the jobs (`job_id`: their id column) passing every condition.

    A page walks its sort's order and stops after `page_end` rows: where a condition is common, testing each
    job walked by its primary key is cheapest (page_end x jobs / passing probes); where it is rare, the range of
    the jobs that pass it is read from the (name, value) index and the rest looked up from there. Neither
    database can tell which from its statistics (SQLite keeps none per value range, PostgreSQL's histogram of
    `value` mixes every metric), so the range is counted here, up to the point where walking wins:
    passing^2 x DRIVE_COST = page_end x jobs. page_end None (a summary or an export: every row) reads the rarest
    range."""
    groups = by_metric(conditions)
    if not groups:
        return []
    rarest: str | None = None
    if page_end is None:
        counts = {name: s.scalar(count_passing(name, cs, MAX_COUNTED)) or 0 for name, cs in groups.items()}
        rarest = min(counts, key=counts.__getitem__)
    else:
        limit = int(math.sqrt(page_end * max(jobs, 1) / DRIVE_COST)) + 1
        counts = {name: s.scalar(count_passing(name, cs, limit)) or 0 for name, cs in groups.items()}
        rare = {name: n for name, n in counts.items() if n < limit}
        rarest = min(rare, key=rare.__getitem__) if rare else None
    dialect = s.get_bind().dialect.name
    return [job_id.in_(passing_ids(name, cs)) if name == rarest else passes(job_id, name, cs, dialect)
            for name, cs in groups.items()]
