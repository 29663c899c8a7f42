"""The outbox: an event becomes a notification row, and a delivery row per channel that wants it, in the
transaction of the state change that causes it. A portal that dies after the change has committed therefore
still has the message to send; one that dies before it never made the change either.

The sender (services/notifications_sender.py) carries the deliveries out; the in-portal list reads the
notifications. Nothing here sends anything or renders text."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.models import JobStatus
from services.store.notification_tables import (
    Notification,
    NotificationChannel,
    NotificationDelivery,
    NotificationMember,
    NotificationSettings,
)
from services.store.orm import Job, JobEvent, utcnow

# A job's end, by how it ended. "failure" jobs notify only on the first two.
FAILURE_EVENTS = ("failed", "max_runtime")
END_EVENTS = ("succeeded", "failed", "stopped", "max_runtime")  # FAILURE_EVENTS among them
# Not a job's event: said to a channel's owner in the portal only (a channel that fails cannot carry it).
CHANNEL_DISABLED = "channel_disabled"
STARTED = "started"
QUEUE_WAIT_SECONDS = 60.0
TEST = "test"
CONFIRM = "confirm"  # the one message an e-mail address gets before its owner confirmed it
QUIET_EVENTS = (TEST, CONFIRM)  # said to a channel, not in the portal's list nor its unread count
NOTIFY_CHOICES = ("end", "failure", "never")
DEFAULT_NOTIFY = "end"
TEAM = "group:"  # the owner of a team channel: "group:" + the group's name
PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"


def end_event(status: JobStatus, reason: str | None) -> str | None:
    """The event a job's final status is, None for a status that is not an end."""
    if status is JobStatus.SUCCEEDED:
        return "succeeded"
    if status is JobStatus.STOPPED:
        return "stopped"
    if status in (JobStatus.FAILED, JobStatus.SUBMIT_FAILED):
        return "max_runtime" if (reason or "").startswith("Hit max runtime") else "failed"
    return None


def default_notify(s: Session, owner: str) -> str:
    row = s.get(NotificationSettings, owner)
    return row.default_notify if row is not None else DEFAULT_NOTIFY


def job_facts(job: Job, event: str) -> dict[str, Any]:
    """What a message about the job says, as it is now (the job may change or go before the message is sent)."""
    runtime = job.runtime_seconds
    if runtime is None and job.started_at is not None and job.finished_at is None:  # still running: so far
        runtime = max(0.0, (utcnow() - job.started_at).total_seconds())
    return {
        "event": event,
        "job": {"id": job.id, "name": job.name, "owner": job.owner, "status": job.status, "reason": job.reason,
                "runtime_seconds": runtime, "final_metrics": dict(job.final_metrics or {}),
                "max_runtime_hours": (job.request or {}).get("max_runtime_hours")},
        "path": f"/job?id={job.id}",
    }


def job_choice(s: Session, job: Job) -> str:
    return (job.request or {}).get("notify") or default_notify(s, job.owner)


def job_ended(s: Session, job: Job, status: JobStatus) -> None:
    """Called by set_status with its session: the job's end (or its start after a wait in the queue), if the job's
    (or its owner's) choice wants it."""
    if status is JobStatus.RUNNING:
        _started(s, job)
        return
    event = end_event(status, job.reason)
    if event is None:
        return
    choice = job_choice(s, job)
    if not (choice == "never" or (choice == "failure" and event not in FAILURE_EVENTS)):
        record(s, job.owner, event, job_facts(job, event), job_id=job.id, key=f"job:{job.id}:end")
    if event in FAILURE_EVENTS:  # the team hears of every failure of its members, whatever each job chose
        groups = [f"{TEAM}{g}" for g in s.scalars(select(NotificationMember.group).where(
            NotificationMember.owner == job.owner))]
        if job.team and f"{TEAM}{job.team}" not in groups:  # the job's own team's channel (services/teams.py)
            groups.append(f"{TEAM}{job.team}")
        for team in s.scalars(select(NotificationChannel).where(
                NotificationChannel.owner.in_(groups), NotificationChannel.enabled.is_(True))) if groups else []:
            record(s, team.owner, event, job_facts(job, event), job_id=job.id, key=f"job:{job.id}:end:{team.owner}",
                   channels=[team])


def remember_groups(s: Session, owner: str, groups: tuple[str, ...] | list[str]) -> None:
    """The owner's groups as of this submit (proxy or OIDC said them), for their team channels."""
    known = set(s.scalars(select(NotificationMember.group).where(NotificationMember.owner == owner)))
    wanted = {g[:255] for g in groups}
    if known == wanted:
        return
    s.execute(delete(NotificationMember).where(NotificationMember.owner == owner,
                                               NotificationMember.group.in_(known - wanted)))
    s.add_all(NotificationMember(owner=owner, group=g) for g in wanted - known)


def _started(s: Session, job: Job) -> None:
    """A job that waited in the queue at least QUEUE_WAIT_SECONDS: its start is news (who waits that long is no
    longer watching). Said for jobs that notify when they end."""
    waited = (utcnow() - job.created_at).total_seconds()
    if waited < QUEUE_WAIT_SECONDS or job_choice(s, job) != "end":
        return
    queued = s.scalar(select(JobEvent.id).where(JobEvent.job_id == job.id, JobEvent.status == JobStatus.QUEUED.value)
                      .limit(1))
    if queued is not None:
        record(s, job.owner, STARTED, job_facts(job, STARTED) | {"waited_seconds": waited}, job_id=job.id,
               key=f"job:{job.id}:{STARTED}")


def record(s: Session, owner: str, event: str, payload: dict[str, Any], job_id: int | None = None,
           key: str | None = None, channels: list[NotificationChannel] | None = None,
           read: bool = False) -> Notification | None:
    """The notification, and a pending delivery to each of `channels` (default: the owner's enabled channels that
    take `event`, an e-mail address only once confirmed). A `key` already recorded makes this a no-op: each event is
    said once. `read`: not news in the portal (a test message), so never in the unread count."""
    if key is not None and s.scalar(select(Notification.id).where(Notification.key == key)) is not None:
        return None
    now = utcnow()
    note = Notification(owner=owner, job_id=job_id, event=event, key=key, payload=payload, created_at=now,
                        read_at=now if read else None)
    s.add(note)
    s.flush()
    if channels is None:
        channels = [c for c in s.scalars(select(NotificationChannel).where(
            NotificationChannel.owner == owner, NotificationChannel.enabled.is_(True)))
            if event in (c.events or []) and (c.kind != "email" or c.confirmed_at is not None)]
    s.add_all(NotificationDelivery(notification_id=note.id, channel_id=c.id, idempotency_key=uuid.uuid4().hex,
                                   status=PENDING, attempts=0, next_attempt_at=now) for c in channels)
    return note
