"""Tables. Any change here needs an Alembic revision in migrations/versions (a test compares them)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite (which stores naive values) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Steps, byte offsets and point ids outgrow 32 bits on PostgreSQL; SQLite's INTEGER is already 64-bit (and
# must stay INTEGER for its row ids).
BIG_INT = BigInteger().with_variant(Integer, "sqlite")

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_floats(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _encode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode_floats(v) for v in value]
    return value


def _decode_floats(value: Any) -> Any:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_floats(v) for v in value]
    return value


class FloatJSON(TypeDecorator[Any]):
    """JSON whose numbers may be NaN or infinite (a diverged loss): PostgreSQL's JSON has no such tokens, so
    they are stored as the strings "NaN", "Infinity", "-Infinity" and read back as floats."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return _encode_floats(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return _decode_floats(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


SORT_INDEX_FILTERS = ("owner", "status_group", "gpus", "template")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(String(36), unique=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(20))
    # Denormalised dashboard section, so each section is one index range in id order.
    status_group: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(20))
    backend_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    nodes: Mapped[int] = mapped_column(Integer, default=1)
    cost_per_hour: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    epoch: Mapped[int | None] = mapped_column(Integer)
    total_epochs: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(BIG_INT)
    total_steps: Mapped[int | None] = mapped_column(BIG_INT)
    progress: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    latest_metrics: Mapped[dict[str, float]] = mapped_column(FloatJSON, default=dict)
    final_metrics: Mapped[dict[str, float]] = mapped_column(FloatJSON, default=dict)
    gpu_util: Mapped[float | None] = mapped_column(Float)
    gpu_memory_mib: Mapped[float | None] = mapped_column(Float)
    # Since when the job's GPUs have been below the idle threshold (None: busy, or no GPU data).
    gpu_idle_since: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    # Lower-cased name, owner, script, parameters, tags and note: the text search looks here.
    search_text: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    # Denormalised for the history's sorts: the final loss, and what the run cost once it ended.
    final_loss: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float | None] = mapped_column(Float)
    gpu_hours: Mapped[float | None] = mapped_column(Float)
    # How long it ran, once it has ended (None if it never started).
    runtime_seconds: Mapped[float | None] = mapped_column(Float)
    # The template the job was started from (its name at submit time), for the history's filter.
    template: Mapped[str | None] = mapped_column(String(100))
    # A trial of a sweep (services/sweeps.py): the sweep and the Optuna trial number it runs (a retry keeps it).
    sweep_id: Mapped[int | None] = mapped_column(Integer)
    sweep_trial: Mapped[int | None] = mapped_column(Integer)
    # The submitter's team it belongs to (services/teams.py): its members see it, its leads may stop it.
    team: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_jobs_group_id", "status_group", "id"),
        Index("ix_jobs_team_id", "team", "id"),
        Index("ix_jobs_team_group", "team", "status_group", "owner"),  # team counts from the index alone (0027)
        Index("ix_jobs_sweep", "sweep_id", "sweep_trial"),
        Index("ix_jobs_owner_group_id", "owner", "status_group", "id"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_template_id", "template", "id"),
        # The history's sorts, in page order (value, id) with the common filters' columns: a page walks one
        # index and tests the filters there.
        *(Index(f"ix_jobs_by_{c}", c, "id", *SORT_INDEX_FILTERS) for c in ("final_loss", "cost", "gpu_hours",
                                                                            "runtime_seconds")),
        Index("ix_jobs_name", "name", "id"),
        Index("ix_jobs_gpus", "gpus", "id"),
        Index("ix_jobs_owner_id", "owner", "id"),
        # Ids only grow (migration 0015): a deleted job's id is never handed out again.
        {"sqlite_autoincrement": True},
    )


def request_number(dialect: str, key: str) -> Any:
    """A numeric submit parameter read from the job's request, written exactly as the expression indexes of
    migration 0011 are, so sorting by it walks an index. `key` is one of a fixed set, never user text."""
    if dialect == "sqlite":
        return literal_column(f"CAST(json_extract(jobs.request, '$.{key}') AS REAL)", Float)
    return literal_column(f"CAST(jobs.request ->> '{key}' AS DOUBLE PRECISION)", Float)


class JobTotals(Base):
    """Jobs, successes, GPU-hours and cost per (owner, status group, GPUs, template), kept in step with the
    jobs table by triggers (migration 0010): the history's summary strip sums these instead of every job."""

    __tablename__ = "job_totals"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    status_group: Mapped[str] = mapped_column(String(20), primary_key=True)
    gpus: Mapped[int] = mapped_column(Integer, primary_key=True)
    template: Mapped[str] = mapped_column(String(100), primary_key=True)
    jobs: Mapped[int] = mapped_column(BigInteger)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    gpu_hours: Mapped[float] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)


class JobFinalMetric(Base):
    """A job's final metric as a row, written by triggers from the jobs table (migration 0013): the history
    sorts by any of them by walking (name, value), with the job's filter columns at hand."""

    __tablename__ = "job_final_metrics"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    # The job's, copied by the triggers: the sort's index tests the history's common filters itself.
    owner: Mapped[str] = mapped_column(String(255))
    status_group: Mapped[str] = mapped_column(String(20))
    gpus: Mapped[int] = mapped_column(Integer)
    template: Mapped[str | None] = mapped_column(String(100))

    # _probe (migration 0017): whether one job passes a metric filter, read from the index alone.
    __table_args__ = (Index("ix_job_final_metrics_sort", "name", "value", "job_id", *SORT_INDEX_FILTERS),
                      Index("ix_job_final_metrics_probe", "job_id", "name", "value"))


class MetricPoint(Base):
    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(BIG_INT, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(BIG_INT)
    epoch: Mapped[float | None] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[float] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_metric_points_job_name_step", "job_id", "name", "step"),)


class JobLog(Base):
    """Where a job's log archive lives, and how far the sync loop has read it."""

    __tablename__ = "job_logs"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(BIG_INT, default=0)
    lines: Mapped[int] = mapped_column(BIG_INT, default=0)
    parser_state: Mapped[dict[str, Any]] = mapped_column(FloatJSON, default=dict)
    # When retention deleted the archive (PORTAL_LOG_RETENTION_DAYS): the page then says so.
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobEvent(Base):
    """State changes with time, for the job page's timeline and for audits."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)


class ApiToken(Base):
    """A personal API token. Only its SHA-256 is kept: the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    # The groups the owner had when the token was made, so roles by group work for scripts too.
    groups: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Every token ends: its lifetime is chosen at creation, at most settings.token_max_days.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_api_tokens_owner", "owner", "id"),)


class JobTemplate(Base):
    """A named, reusable set of submit-form values (Submit page: "Start from template")."""

    __tablename__ = "job_templates"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids only grow (migration 0015)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    team: Mapped[str | None] = mapped_column(String(100))  # shared with this team only; None: with everyone


class SeriesCache(Base):
    """A metric series already downsampled for its chart, so a page never reads a million points.
    The sync loop marks it dirty when points arrive and refreshes it in the background."""

    __tablename__ = "series_cache"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    points: Mapped[int] = mapped_column(Integer, nullable=False)
    axis: Mapped[str] = mapped_column(String(10), nullable=False)
    x: Mapped[list[float]] = mapped_column(JSON, nullable=False)
    y: Mapped[list[float | None]] = mapped_column(JSON, nullable=False)
    dirty: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)


class GpuSample(Base):
    """GPU utilisation and memory of a running job, sampled by the sync loop (Prometheus/DCGM or NVML)."""

    __tablename__ = "gpu_samples"

    id: Mapped[int] = mapped_column(BIG_INT, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    ts: Mapped[float] = mapped_column(Float, nullable=False)
    util_percent: Mapped[float | None] = mapped_column(Float)
    memory_mib: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_gpu_samples_job_ts", "job_id", "ts"),)


class ResourceSample(Base):
    """CPU and memory of a running job (any job, GPUs or not), sampled by the sync loop: the local job's process
    tree, or cAdvisor's series in Prometheus for a cluster job's pods (services/resource_telemetry.py)."""

    __tablename__ = "resource_samples"

    id: Mapped[int] = mapped_column(BIG_INT, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    ts: Mapped[float] = mapped_column(Float, nullable=False)
    cpu_cores: Mapped[float | None] = mapped_column(Float)
    memory_mib: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_resource_samples_job_ts", "job_id", "ts"),)


# The notification tables live in their own module, on the same metadata (the migrations compare all of it).
from services.store import checkpoint_tables as _checkpoint_tables  # noqa: E402, F401
from services.store import notification_tables as _notification_tables  # noqa: E402, F401
from services.store import sweep_tables as _sweep_tables  # noqa: E402, F401
from services.store import team_tables as _team_tables  # noqa: E402, F401
