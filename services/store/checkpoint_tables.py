"""Checkpoint requests (migration 0023): one row per "Save checkpoint", with when it was asked for, when the
portal delivered it (signal sent, or the pods' annotation written) and when the script's checkpoint appeared."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import Base, UTCDateTime


class CheckpointRequest(Base):
    __tablename__ = "checkpoint_requests"
    __table_args__ = (Index("ix_checkpoint_requests_job", "job_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    written_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    written_name: Mapped[str | None] = mapped_column(String(255))  # the checkpoint that appeared after it
    error: Mapped[str | None] = mapped_column(Text)  # why it could not be delivered
