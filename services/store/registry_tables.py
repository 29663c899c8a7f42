"""Model registrations (migration 0026): one row per "Register model", from pending to done (the MLflow model
version made) or failed (with a sentence). `key` is the registration id the portal tags the MLflow run and version
with, so that a registration retried after a restart finds what it made before instead of making a second one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import Base, UTCDateTime

PENDING, DONE, FAILED = "pending", "done", "failed"


class ModelRegistration(Base):
    __tablename__ = "model_registrations"
    __table_args__ = (Index("ix_model_registrations_job", "job_id", "id"),
                      Index("ix_model_registrations_status", "status", "next_attempt_at"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    requested_by: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    model_name: Mapped[str] = mapped_column(String(256), nullable=False)
    alias: Mapped[str | None] = mapped_column(String(255))
    paths: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)  # chosen in the job's output
    tracking_uri: Mapped[str] = mapped_column(Text, nullable=False)  # the owner's team server, fixed at request
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(32))
    model_url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed, or why the last attempt did
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
