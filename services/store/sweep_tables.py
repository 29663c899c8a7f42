"""The sweep tables (migration 0022): one row per sweep, and Optuna's own study tables on the same metadata.

A sweep's trials are ordinary jobs (jobs.sweep_id, jobs.sweep_trial); what the search knows (sampled
parameters, reported values, pruned or complete) lives in Optuna's tables, in the portal's own database, so a
backup or a PostgreSQL failover carries both together. Their schema is Optuna's (the pinned version's), created by
the portal's migration rather than by Optuna, so the portal's Alembic history stays the one owner of the schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from optuna.storages._rdb import models as optuna_models
from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import Base, UTCDateTime

SWEEP_STATES = ("running", "stopping", "done", "stopped", "failed")


class Sweep(Base):
    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_owner_id", "owner", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    # The owner's groups when it was created: its trials are submitted in their name while they are away.
    owner_groups: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # running -> done | failed | stopped; stopping while its running trials are being stopped.
    state: Mapped[str] = mapped_column(String(10), nullable=False)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    study_name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


OPTUNA_TABLES = tuple(optuna_models.BaseModel.metadata.sorted_tables)
# The same tables on the portal's metadata, so the test that compares the ORM with the migrations covers them too.
for _table in OPTUNA_TABLES:
    _table.to_metadata(Base.metadata)
