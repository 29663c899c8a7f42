"""What a job costs: the one place a cost is computed.

A price (table `prices`) is per GPU type, or per node, from the date it takes effect; without one, the settings'
`gpu_price_per_hour` and `node_price_per_hour`. A job's cost accrues from the intervals its pods (local: its process)
actually ran, on every node it held, never its time in the queue: each interval is cut where a month begins or a
price takes effect and priced by what was in effect then. The sync loop accrues running jobs as they run (live on
the job page and card) and once more at their end, when the rows are frozen (`final`): a later price, even one
dated in the past, does not rewrite what a finished job cost."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.models import ValidationProblem
from services.store.cost_tables import JobUsage, Price, UsageTotal
from services.store.orm import Job, utcnow

LOCAL_GPU_TYPE = "local"  # the embedded backend's one GPU type
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rate:
    gpu_hour: float
    node_hour: float
    effective_from: datetime = EPOCH

    def per_hour(self, gpus: int, nodes: int = 1) -> float:
        return nodes * (self.node_hour + gpus * self.gpu_hour)


@dataclass(frozen=True)
class Interval:
    """Where and how long one pod (or local process) held its GPUs."""

    start: datetime
    end: datetime
    gpus: int
    node: str | None = None
    gpu_type: str | None = None


def month_of(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m")


def month_start(month: str) -> datetime:
    y, m = (int(x) for x in month.split("-"))
    return datetime(y, m, 1, tzinfo=UTC)


def _next_month(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)


class PriceBook:
    """The prices in force at any time: a node's own price, from the date it takes effect, wins over its GPU type's,
    and the settings' default over nothing."""

    def __init__(self, rows: Iterable[tuple[str | None, str | None, Rate]], default: Rate):
        self.default = default
        self._by: dict[tuple[str, str], list[Rate]] = defaultdict(list)
        for gpu_type, node, rate in rows:
            key = ("node", node) if node else ("type", gpu_type or "")
            self._by[key].append(rate)
        for rates in self._by.values():
            rates.sort(key=lambda r: r.effective_from)

    def _series(self, gpu_type: str, node: str | None) -> list[list[Rate]]:
        """The series that may apply, the node's first: before its first price the type's is in force."""
        return [r for r in ((self._by.get(("node", node)) if node else None), self._by.get(("type", gpu_type))) if r]

    def rate(self, gpu_type: str, node: str | None = None, at: datetime | None = None) -> Rate:
        at = at or utcnow()
        for series in self._series(gpu_type, node):
            best = None
            for r in series:
                if r.effective_from <= at:
                    best = r
            if best is not None:
                return best
        return self.default

    def in_force(self, at: datetime | None = None, exclude: tuple[str, str] | None = None) -> list[Rate]:
        """Each GPU type's and node's price in force at `at` (those that have one)."""
        at = at or utcnow()
        return [r[-1] for key, series in self._by.items() if key != exclude
                if (r := [x for x in series if x.effective_from <= at])]

    def changes(self, gpu_type: str, node: str | None, start: datetime, end: datetime) -> list[datetime]:
        return [r.effective_from for series in self._series(gpu_type, node) for r in series
                if start < r.effective_from < end]


def load_book(s: Session, settings: Settings) -> PriceBook:
    """The admin's prices, over those the `prices` setting seeds, over the hourly defaults."""
    rows: list[tuple[str | None, str | None, Rate]] = [
        (p.get("gpu_type"), p.get("node"), Rate(float(p.get("gpu_hour", settings.gpu_price_per_hour)),
                                                float(p.get("node_hour", settings.node_price_per_hour)),
                                                _when(p.get("effective_from"))))
        for p in settings.prices]
    rows += [(p.gpu_type, p.node, Rate(p.gpu_hour, p.node_hour, p.effective_from)) for p in s.scalars(select(Price))]
    return PriceBook(rows, Rate(settings.gpu_price_per_hour, settings.node_price_per_hour))


def _when(value: Any) -> datetime:
    if value in (None, ""):
        return EPOCH
    t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def price_intervals(book: PriceBook, intervals: Sequence[Interval], gpu_type: str
                    ) -> dict[tuple[str, str], tuple[float, float]]:
    """(month, GPU type) -> (GPU-seconds, cost) of these intervals."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for iv in intervals:
        kind = iv.gpu_type or gpu_type
        cuts = sorted({iv.start, iv.end, *book.changes(kind, iv.node, iv.start, iv.end)})
        t = iv.start
        while t < _next_month(t) < iv.end:  # month boundaries
            t = _next_month(t)
            cuts.append(t)
        cuts = sorted(set(cuts))
        for a, b in pairwise(cuts):
            secs = (b - a).total_seconds()
            if secs <= 0:
                continue
            acc = out[(month_of(a), kind)]
            acc[0] += secs * iv.gpus
            acc[1] += secs / 3600 * book.rate(kind, iv.node, a).per_hour(iv.gpus)
    return {k: (v[0], v[1]) for k, v in out.items()}


def gpu_type_of(job: Job, settings: Settings) -> str:
    """What the job's GPUs are priced as: the one the backend recorded (node label or Kueue flavor), else this
    backend's default."""
    recorded = (job.backend_ref or {}).get("gpu_type")
    if recorded:
        return str(recorded)[:100]
    return LOCAL_GPU_TYPE if job.backend == "local" else (settings.default_gpu_type or "gpu")


def job_intervals(job: Job, now: datetime, pods: Sequence[dict[str, Any]] | None = None) -> list[Interval]:
    """The job's run intervals: its pods' own (start, end, node) when the backend reports them, else one per node
    from when it started running to its end (or now)."""
    if pods:
        return [Interval(p["start"], p.get("end") or job.finished_at or now, job.gpus, p.get("node"),
                         p.get("gpu_type")) for p in pods if p.get("start")]
    if job.started_at is None:
        return []
    end = job.finished_at or now
    return [Interval(job.started_at, max(end, job.started_at), job.gpus) for _ in range(max(1, job.nodes))]


TEAM_NAME_LENGTH = 100  # job_usage.team, usage_totals.team (and a team's name)


def team_of(s: Session, job: Job) -> str:
    """The team a job's usage counts for: its own (issue 20's Teams), else the first of its owner's groups as the
    identity last gave them."""
    team = getattr(job, "team", None)
    if team:
        return str(team)
    from services.store.notification_tables import NotificationMember

    first = s.scalar(select(NotificationMember.group).where(NotificationMember.owner == job.owner)
                     .order_by(NotificationMember.group).limit(1))
    # A longer group (an LDAP DN, say) is no team, and would not fit the usage rows: PostgreSQL refuses it and the
    # job's end is never recorded.
    return first if first and len(first) <= TEAM_NAME_LENGTH else ""


def accrue(s: Session, job: Job, settings: Settings, now: datetime | None = None, final: bool = False,
           pods: Sequence[dict[str, Any]] | None = None, book: PriceBook | None = None) -> list[str]:
    """Write the job's usage rows and its cost and GPU-hours so far (at its end: for good). A job whose usage is
    already final is left as it is. Returns the months it touched."""
    if s.scalar(select(JobUsage.final).where(JobUsage.job_id == job.id, JobUsage.final.is_(True)).limit(1)):
        return []
    now = now or utcnow()
    book = book or load_book(s, settings)
    fallback = gpu_type_of(job, settings)  # a pod whose node and flavor say nothing: not another pod's type
    priced = price_intervals(book, job_intervals(job, now, pods), fallback)
    # The card's price per hour: that of a pod that runs (else the first), by its type and node where known.
    live = [p for p in pods or () if p.get("start") and p.get("end") is None] or [p for p in pods or ()]
    first = next((p for p in live if p.get("gpu_type")), live[0] if live else {})
    kind, node = str(first.get("gpu_type") or fallback), first.get("node")
    team = team_of(s, job)
    old = list(s.scalars(select(JobUsage).where(JobUsage.job_id == job.id)))
    s.execute(delete(JobUsage).where(JobUsage.job_id == job.id))
    new = [JobUsage(job_id=job.id, month=m, gpu_type=t, owner=job.owner, team=team, gpu_seconds=gs, cost=c,
                    final=final) for (m, t), (gs, c) in priced.items()]
    if not priced and final:  # a job that never ran: frozen at nothing
        new.append(JobUsage(job_id=job.id, month=month_of(now), gpu_type=kind, owner=job.owner, team=team,
                            gpu_seconds=0.0, cost=0.0, final=True))
    s.add_all(new)
    _move_totals(s, old, new)
    job.cost = round(sum(c for _, c in priced.values()), 4)
    job.gpu_hours = round(sum(gs for gs, _ in priced.values()) / 3600, 4)
    job.cost_per_hour = round(book.rate(kind, node, now).per_hour(job.gpus, job.nodes), 2)
    remember_pod_types(job, pods)
    s.flush()
    return sorted({m for m, _ in priced})


POD_TYPES = "pod_gpu_types"  # in a cluster job's backend_ref: pod (UID, else name) -> the GPU type it ran on
POD_TYPES_KEPT = 500


def remember_pod_types(job: Job, pods: Sequence[dict[str, Any]] | None) -> None:
    """Each pod's GPU type, kept with the job: a portal that restarts (or a new leader) reprices a running job's
    earlier pods by what they ran on, also where their node is gone since."""
    typed = {k: str(p["gpu_type"]) for p in pods or () if (k := p.get("uid") or p.get("pod")) and p.get("gpu_type")}
    ref = dict(job.backend_ref or {})
    kept = dict(ref.get(POD_TYPES) or {})
    new = {k: v for k, v in typed.items() if kept.get(k) != v}
    if new and job.backend_ref is not None and len(kept) < POD_TYPES_KEPT:
        job.backend_ref = ref | {POD_TYPES: kept | new}


def _move_totals(s: Session, old: list[JobUsage], new: list[JobUsage]) -> None:
    """`usage_totals` in step with the job's usage rows: its old rows out, its new ones in (the sync loop is the
    only writer, on the leader, so a read-then-write per bucket is safe)."""
    delta: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for sign, rows in ((-1, old), (1, new)):
        for r in rows:
            d = delta[(r.month, r.owner, r.team, r.gpu_type)]
            d[0] += sign
            d[1] += sign * r.gpu_seconds
            d[2] += sign * r.cost
    for (month, owner, team, gpu_type), (jobs, secs, cost) in delta.items():
        if not (jobs or secs or cost):
            continue
        row = s.get(UsageTotal, (month, owner, team, gpu_type))
        if row is None:
            s.add(UsageTotal(month=month, owner=owner, team=team, gpu_type=gpu_type, jobs=int(jobs), gpu_seconds=secs,
                             cost=cost))
        elif row.jobs + jobs <= 0:
            s.delete(row)
        else:
            row.jobs, row.gpu_seconds, row.cost = row.jobs + int(jobs), row.gpu_seconds + secs, row.cost + cost


def hourly_rate(s: Session, settings: Settings, backend: str, gpus: int, nodes: int) -> float:
    """What a job of this shape may cost an hour at today's prices (the submit form's estimate, the ceiling a budget
    weighs). On a cluster the node and GPU type it gets are known only once it runs, and accrual prices it by them:
    the dearest price in force there, so that no budget is passed by a job that landed on a dearer node."""
    book = load_book(s, settings)
    if backend == "local":
        return round(book.rate(LOCAL_GPU_TYPE).per_hour(gpus, nodes), 2)
    rates = [book.rate(settings.default_gpu_type or "gpu"), *book.in_force(exclude=("type", LOCAL_GPU_TYPE))]
    return round(max(r.per_hour(gpus, nodes) for r in rates), 2)


def ceiling_sentence(settings: Settings, cost: float, hours: float, gpus: int, nodes: int) -> str:
    """ "up to $X (8 h × 4 GPUs)": the most a job can cost, by its max runtime."""
    n = gpus * nodes
    shape = f"{hours:g} h × {n} GPU{'s' if n != 1 else ''}" + (f" on {nodes} nodes" if nodes > 1 else "")
    return f"up to {settings.currency}{cost:,.2f} ({shape})"


# Setting prices (admins) ------------------------------------------------------------------------
def set_price(s: Session, who: str, data: dict[str, Any]) -> Price:
    """A price from `effective_from` on (default now), for a GPU type or one node."""
    problems: dict[str, str] = {}
    gpu_type = str(data.get("gpu_type") or "").strip()[:100] or None
    node = str(data.get("node") or "").strip()[:253] or None
    if not gpu_type and not node:
        problems["gpu_type"] = "name a GPU type or a node"
    values: dict[str, float] = {}
    for field in ("gpu_hour", "node_hour"):
        try:
            values[field] = float(data.get(field, 0) or 0)
            if not 0 <= values[field] < 1e6:
                raise ValueError
        except (TypeError, ValueError):
            problems[field] = "a price per hour of 0 or more"
    try:
        when = _when(data.get("effective_from")) if data.get("effective_from") else utcnow()
    except ValueError:
        problems["effective_from"] = "a date like 2026-12-01 or 2026-12-01T08:00"
    if problems:
        raise ValidationProblem(problems)
    row = Price(gpu_type=gpu_type, node=node, gpu_hour=values["gpu_hour"], node_hour=values["node_hour"],
                effective_from=when, set_by=who, set_at=utcnow())
    s.add(row)
    s.flush()
    return row


def price_rows(s: Session) -> list[dict[str, Any]]:
    return [{"id": p.id, "gpu_type": p.gpu_type, "node": p.node, "gpu_hour": p.gpu_hour, "node_hour": p.node_hour,
             "effective_from": p.effective_from.isoformat(), "set_by": p.set_by}
            for p in s.scalars(select(Price).order_by(Price.effective_from.desc(), Price.id.desc()))]
