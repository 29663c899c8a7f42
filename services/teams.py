"""Teams: who is in which team, who leads it, and what that lets them see and do.

A team is an identity group (the proxy's or OIDC's groups, `user.groups`; PORTAL_TEAM_GROUPS may narrow which
groups count) or a team an admin defined, with members and leads (services/store/team_tables.py). Each job
belongs to one of its submitter's teams (`jobs.team`). Members see each other's jobs and templates; leads may
stop their team's jobs; a team with `everyone_visible` off is hidden from non-members under "Everyone" (admins
see everything). The listing filters of the dashboard, the History and the API all come from `scope_where`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, delete, false, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.models import Forbidden, NotFound, User, ValidationProblem
from services.store.notification_tables import NotificationMember
from services.store.orm import Job
from services.store.team_tables import ADMIN, IDENTITY, Team, TeamMember

TEAM_NAME_MAX = 100  # jobs.team, teams.name

_TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")


class Scope(StrEnum):
    """Whose jobs a listing shows."""

    MINE = "mine"
    TEAM = "team"
    EVERYONE = "all"


@dataclass(frozen=True)
class TeamView:
    name: str
    lead: bool = False
    source: str = IDENTITY
    everyone_visible: bool = True
    default_queue: str | None = None
    notify_channel: str | None = None

    def as_json(self, full: bool) -> dict[str, Any]:
        """full: the channel's whole URL (for admins); a webhook URL is a credential, so others see it masked."""
        channel = self.notify_channel
        if channel and not full:
            # Imported here: the notification modules import the job store, which imports this module.
            from services.notifications_settings import shown_target
            from services.notifications_teams import kind_and_url

            channel = shown_target(*kind_and_url(channel))
        return {"name": self.name, "lead": self.lead, "source": self.source,
                "everyone_visible": self.everyone_visible, "default_queue": self.default_queue,
                "notify_channel": channel}


def _view(row: Team | None, name: str, lead: bool = False, source: str = IDENTITY) -> TeamView:
    if row is None:
        return TeamView(name=name, lead=lead, source=source)
    return TeamView(name=row.name, lead=lead, source=row.source, everyone_visible=row.everyone_visible,
                    default_queue=row.default_queue, notify_channel=row.notify_channel)


def _member_name(member: str) -> str:
    member = (member or "").strip()
    if not 1 <= len(member) <= 255:
        raise ValidationProblem({"user": "name the member (1 to 255 characters)"})
    return member


class TeamService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings = settings
        self.sessions = sessions

    # Membership --------------------------------------------------------------------------------------------
    def identity_teams(self, groups: tuple[str, ...] | list[str]) -> list[str]:
        """The groups that count as teams (all, unless PORTAL_TEAM_GROUPS narrows them). A group longer than a team
        name may be (an LDAP DN, a Keycloak path) is none: a job of that team could not be stored."""
        pattern = self.settings.team_groups
        return [g for g in groups if len(g) <= TEAM_NAME_MAX and (not pattern or re.fullmatch(pattern, g))]

    def teams_of(self, user: User, *, remembered: bool = False) -> list[TeamView]:
        """The user's teams: identity groups first (as the identity lists them), then admin-defined ones.

        A token user's groups are only remembered from their last signed-in submit (`groups_remembered`): they may
        have left a group since, so those count only where `remembered` asks for them (where a job goes and which
        team it belongs to), never for what the user may see."""
        groups = user.groups if remembered or not user.groups_remembered else ()
        names = self.identity_teams(groups)
        with self.sessions.begin() as s:
            rows = s.execute(select(TeamMember, Team).join(Team, Team.id == TeamMember.team_id)
                             .where(TeamMember.user == user.name)).all()
            leads = {t.name for m, t in rows if m.lead}
            admin = {t.name for m, t in rows if t.source == ADMIN}
            wanted = set(names) | admin
            settings = {t.name: t for t in s.scalars(select(Team).where(Team.name.in_(wanted)))} if wanted else {}
            # A membership row counts for an admin-defined team; for an identity team the identity decides who is
            # in it, and a row there can only make a member a lead. A group named like an admin-defined team
            # makes nobody a member of it: only the admin's list does (else the group would open its hidden jobs).
            names = [n for n in names if n not in settings or settings[n].source != ADMIN or n in admin]
            names += sorted(admin - set(names))
            return [_view(settings.get(n), n, n in leads) for n in names]

    def team_names(self, user: User, *, remembered: bool = False) -> list[str]:
        return [t.name for t in self.teams_of(user, remembered=remembered)]

    def members(self, team: str) -> list[str]:
        """Who is in the team: its admin-defined members, and for an identity group everyone whose last sign-in
        listed it (the groups remembered at submit, services/tokens.py)."""
        with self.sessions.begin() as s:
            row = s.scalars(select(Team).where(Team.name == team)).one_or_none()
            listed = set(s.scalars(select(TeamMember.user).where(TeamMember.team_id == row.id))) if row else set()
            if (row is None or row.source == IDENTITY) and self.identity_teams([team]):
                listed |= set(s.scalars(select(NotificationMember.owner).where(NotificationMember.group == team)))
            return sorted(listed)

    def leads(self, team: str) -> list[str]:
        with self.sessions.begin() as s:
            stmt = (select(TeamMember.user).join(Team, Team.id == TeamMember.team_id)
                    .where(Team.name == team, TeamMember.lead.is_(True)))
            return sorted(s.scalars(stmt))

    def lead_teams(self, user: User) -> set[str]:
        return {t.name for t in self.teams_of(user) if t.lead}

    def is_lead(self, user: User, team: str | None) -> bool:
        return bool(team) and team in self.lead_teams(user)

    def team(self, name: str) -> TeamView:
        """A team's settings (an identity group nobody configured has the defaults)."""
        with self.sessions.begin() as s:
            row = s.scalars(select(Team).where(Team.name == name)).one_or_none()
            if row is None:
                raise NotFound(f"There is no team named '{name}'.")
            return _view(row, name, source=row.source)

    def all_teams(self) -> list[TeamView]:
        with self.sessions.begin() as s:
            return [_view(t, t.name, source=t.source) for t in s.scalars(select(Team).order_by(Team.name))]

    def listed(self, user: User) -> list[TeamView]:
        """The teams a user is shown (API, Teams page): their own, and every configured one for an admin."""
        mine = self.teams_of(user)
        if not user.is_admin:
            return mine
        seen = {t.name for t in mine}
        return mine + [t for t in self.all_teams() if t.name not in seen]

    def choose(self, user: User, team: str | None) -> str | None:
        """The team a new job of this user belongs to: the one asked for if they are in it, else the first."""
        names = self.team_names(user, remembered=True)
        if team is None or team == "":
            return names[0] if names else None
        if team not in names:
            shown = ", ".join(names) if names else "none"
            raise ValidationProblem({"team": f"You are not in the team '{team}'; your teams: {shown}."})
        return team

    # What membership allows -----------------------------------------------------------------------------------
    def hidden_teams(self, s: Session) -> set[str]:
        return set(s.scalars(select(Team.name).where(Team.everyone_visible.is_(False))))

    def scope_where(self, user: User, scope: Scope | str, s: Session | None = None) -> list[ColumnElement[bool]]:
        """The filter on `jobs` of a listing of this scope, for this user: the one place visibility is decided."""
        scope = Scope(scope)
        if scope is Scope.MINE:
            return [Job.owner == user.name]
        mine = self.team_names(user)
        if scope is Scope.TEAM:
            return [Job.team.in_(mine)] if mine else [false()]
        if user.is_admin:
            return []
        if not (user.reads_all or self.settings.show_others_jobs):
            return [or_(Job.owner == user.name, Job.team.in_(mine))] if mine else [Job.owner == user.name]
        hidden = self.hidden_from(user, mine, s)
        if not hidden:
            return []
        return [or_(Job.team.is_(None), Job.team.notin_(hidden), Job.owner == user.name)]

    def hidden_from(self, user: User, mine: list[str] | None = None, s: Session | None = None) -> set[str]:
        """The hidden teams this user is not in (their jobs are not theirs to see, unless their own)."""
        if user.is_admin:
            return set()
        mine = self.team_names(user) if mine is None else mine
        if s is None:
            with self.sessions.begin() as own:
                return self.hidden_teams(own) - set(mine)
        return self.hidden_teams(s) - set(mine)

    def may_see(self, user: User, owner: str, team: str | None) -> bool:
        """One job: as `scope_where(EVERYONE)` would list it."""
        if user.name == owner or user.is_admin:
            return True
        mine = self.team_names(user) if team else []
        if team and team in mine:
            return True
        if not (user.reads_all or self.settings.show_others_jobs):
            return False
        if team is None:
            return True
        with self.sessions.begin() as s:
            row = s.scalars(select(Team.everyone_visible).where(Team.name == team)).one_or_none()
        return row is None or bool(row)

    def seeing(self, user: User) -> Callable[[str, str | None], bool]:
        """`may_see` for many jobs at once (a queue's lines): the user's teams and the hidden ones read once."""
        if user.is_admin:
            return lambda owner, team: True
        mine = self.team_names(user)
        others = user.reads_all or self.settings.show_others_jobs
        hidden = self.hidden_from(user, mine) if others else set()
        return lambda owner, team: (owner == user.name or team in mine
                                    or (others and (team is None or team not in hidden)))

    def may_stop(self, user: User, owner: str, team: str | None, leads: set[str] | None = None) -> bool:
        """Stop a job: its owner, admins, and the leads of its team. leads: the user's `lead_teams`, where the
        caller read them once for many jobs (a dashboard's cards)."""
        if user.is_admin or user.name == owner:
            return True
        return bool(team) and team in (self.lead_teams(user) if leads is None else leads)

    # Admin ------------------------------------------------------------------------------------------------------
    def save(self, user: User, name: str, *, source: str = ADMIN, everyone_visible: bool = True,
             default_queue: str | None = None, notify_channel: str | None = None) -> TeamView:
        """Define a team, or change one's settings (admins only)."""
        self._admin(user)
        name = (name or "").strip()
        if not _TEAM_NAME.match(name):
            raise ValidationProblem({"name": "give the team a name of 1 to 100 letters, digits, spaces or ._@-"})
        if source not in (ADMIN, IDENTITY):
            raise ValidationProblem({"source": "is 'admin' (members listed here) or 'identity' (a sign-in group)"})
        queue = (default_queue or "").strip() or None
        if queue and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", queue):
            raise ValidationProblem({"default_queue": "is a Kueue LocalQueue name: lower-case letters, digits, -, ."})
        channel = (notify_channel or "").strip() or None
        # Imported here: the notification modules import the job store, which imports this module.
        from services.notifications_settings import webhook_problem
        from services.notifications_teams import kind_and_url, sync_team_channels

        if channel:
            problem = webhook_problem(kind_and_url(channel)[1], self.settings.webhook_allowed_hosts)
            if problem:
                raise ValidationProblem({"notify_channel": problem})
        with self.sessions.begin() as s:
            row = s.scalars(select(Team).where(Team.name == name)).one_or_none()
            if row is None:
                row = Team(name=name)
                s.add(row)
            row.source, row.everyone_visible = source, bool(everyone_visible)
            row.default_queue, row.notify_channel = queue, channel
            s.flush()
            sync_team_channels(s, self.settings)  # its channel hears of failures from now on, not after a restart
            return _view(row, name, source=row.source)

    def define(self, user: User, name: str, *, members: list[str] | None = None, leads: list[str] | None = None,
               **settings: Any) -> TeamView:
        """Save a team's settings (as `save`) and, when given, its whole list of members and of leads. Every name is
        checked before anything is written: a refused one leaves the team as it was (the API and the Teams page)."""
        self._admin(user)
        for member in (*(members or ()), *(leads or ())):
            _member_name(member)
        saved = self.save(user, name, **settings)
        if members is not None or leads is not None:
            current = self.members(saved.name)
            wanted = dict.fromkeys(members if members is not None else current, False)
            wanted |= dict.fromkeys(leads if leads is not None else self.leads(saved.name), True)
            for gone in set(current) - set(wanted):
                self.set_member(user, saved.name, gone, remove=True)
            for member, lead in wanted.items():
                self.set_member(user, saved.name, member, lead=lead)
        return saved

    def set_member(self, user: User, team: str, member: str, *, lead: bool = False, remove: bool = False) -> None:
        """Add a member (or lead) to a team, change their lead flag, or remove them (admins only)."""
        self._admin(user)
        member = _member_name(member)
        with self.sessions.begin() as s:
            row = s.scalars(select(Team).where(Team.name == team)).one_or_none()
            if row is None:
                raise NotFound(f"There is no team named '{team}'.")
            if remove:
                s.execute(delete(TeamMember).where(TeamMember.team_id == row.id, TeamMember.user == member))
                return
            m = s.scalars(select(TeamMember).where(TeamMember.team_id == row.id, TeamMember.user == member)).first()
            if m is None:
                s.add(TeamMember(team_id=row.id, user=member, lead=lead))
            else:
                m.lead = lead

    def delete(self, user: User, team: str) -> None:
        self._admin(user)
        with self.sessions.begin() as s:
            row = s.scalars(select(Team).where(Team.name == team)).one_or_none()
            if row is None:
                raise NotFound(f"There is no team named '{team}'.")
            s.delete(row)

    def queue_of(self, team: str | None) -> str | None:
        """The Kueue LocalQueue a job of this team goes to, if the team has one."""
        if not team:
            return None
        with self.sessions.begin() as s:
            return s.scalars(select(Team.default_queue).where(Team.name == team)).one_or_none()

    @staticmethod
    def _admin(user: User) -> None:
        if not user.is_admin:
            raise Forbidden("Only an admin may define teams, their members and leads.")

