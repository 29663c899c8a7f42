"""Prices, usage and budgets (migration 0025, issue 20).

`prices`: what a GPU type (or one node) costs per hour from the date each row takes effect; `job_usage`: each job's
GPU-seconds and cost per month and GPU type, accrued by the sync loop while it runs and frozen (`final`) when it
ends, so the Usage page and budgets sum a small indexed table instead of the jobs; `budgets`: a team's or a
user's monthly limit in money or GPU-hours; `usage_totals`: the usage per month, owner, team and GPU type."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import BIG_INT, Base, UTCDateTime


class Price(Base):
    __tablename__ = "prices"
    __table_args__ = (Index("ix_prices_effective", "effective_from"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gpu_type: Mapped[str | None] = mapped_column(String(100))  # None with a node: that node whatever its GPUs
    node: Mapped[str | None] = mapped_column(String(253))
    gpu_hour: Mapped[float] = mapped_column(Float, nullable=False)
    node_hour: Mapped[float] = mapped_column(Float, nullable=False)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    set_by: Mapped[str] = mapped_column(String(255), nullable=False)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class JobUsage(Base):
    __tablename__ = "job_usage"
    __table_args__ = (Index("ix_job_usage_month_owner", "month", "owner"),
                      Index("ix_job_usage_month_team", "month", "team"))

    # No foreign key: a job deleted from the history still cost what it cost.
    job_id: Mapped[int] = mapped_column(BIG_INT, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-12"
    gpu_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    team: Mapped[str] = mapped_column(String(100), nullable=False)  # "" for a job of no team
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    cost: Mapped[float] = mapped_column(Float, nullable=False)
    final: Mapped[bool] = mapped_column(Boolean, nullable=False)


class UsageTotal(Base):
    """`job_usage` summed per month, owner, team and GPU type, kept in step by each accrual (services/costs.py):
    the Usage page reads a year of a team's usage as a few hundred rows, whatever the number of jobs."""

    __tablename__ = "usage_totals"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    team: Mapped[str] = mapped_column(String(100), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(100), primary_key=True)
    jobs: Mapped[int] = mapped_column(BIG_INT, nullable=False)  # jobs that ran in the month (usage rows)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    cost: Mapped[float] = mapped_column(Float, nullable=False)


class Budget(Base):
    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_budgets_scope_name"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(10), nullable=False)  # "team" or "user"
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    unit: Mapped[str] = mapped_column(String(10), nullable=False)  # "money" or "gpu_hours"
    monthly_limit: Mapped[float] = mapped_column(Float, nullable=False)
    overdraft: Mapped[bool] = mapped_column(Boolean, nullable=False)  # a job may go past what is left
    at_limit: Mapped[str] = mapped_column(String(10), nullable=False)  # at 100 %: "refuse" or "wait"
    set_by: Mapped[str] = mapped_column(String(255), nullable=False)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
