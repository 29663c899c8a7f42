"""Teams (migration 0024): a team is an identity group (proxy or OIDC) or one an admin defined, with members and
leads. A row in `teams` holds a team's settings (who may see its jobs, its Kueue queue, its channel); an identity
group needs no row until an admin sets one of those. `team_members` lists admin-defined members and leads (an
identity group's members come from the identity itself; a row there can make one of them a lead)."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.store.orm import Base

IDENTITY = "identity"
ADMIN = "admin"


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    source: Mapped[str] = mapped_column(String(20), nullable=False, default=ADMIN)  # identity | admin
    # False: the team's jobs and templates are hidden from non-members under "Everyone" (admins still see them).
    everyone_visible: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    default_queue: Mapped[str | None] = mapped_column(String(253))  # a Kueue LocalQueue for the team's jobs
    notify_channel: Mapped[str | None] = mapped_column(String(2000))  # a webhook spec, as in team_webhooks


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (
        UniqueConstraint("team_id", "user", name="uq_team_members_team_user"),
        Index("ix_team_members_user", "user"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), nullable=False)
    user: Mapped[str] = mapped_column(String(255), nullable=False)
    lead: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
