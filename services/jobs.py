"""Use cases: submit, stop, delete, retry, clone, save checkpoint, and the validation of a submission.

`JobService` also answers what pages read, from mixins it inherits, one per capability: the job queries
(services/job_queries.py: one job, listings, counts), what a job left behind (services/job_files.py: events,
logs, output files) and its charts (services/job_charts.py: metric, GPU and compare series)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from services import budget_wait, local_queue, priority_choice
from services.auth import may_act
from services.backends.base import Backend, BackendError, JobSubmission
from services.backends.unreachable import BackendUnreachable
from services.budgets import refuse_over_budget
from services.checkpoints import CheckpointService, resume_problem
from services.config import Settings
from services.costs import hourly_rate
from services.job_charts import MAX_CHART_POINTS as MAX_CHART_POINTS  # the chart names, re-exported for pages
from services.job_charts import MAX_COMPARED as MAX_COMPARED
from services.job_charts import JobCharts
from services.job_charts import Series as Series
from services.job_files import JobFiles
from services.job_queries import JobQueries
from services.job_queries import to_view as to_view  # re-exported: the sync loop and history use it from here
from services.job_resources import JobResources
from services.job_snapshots import write_snapshot
from services.job_text import search_text
from services.models import (
    ACTIVE_STATUSES,
    GROUP_OF,
    Conflict,
    Forbidden,
    JobRequest,
    JobStatus,
    JobView,
    NotFound,
    StatusGroup,
    User,
    ValidationProblem,
)
from services.notifications_outbox import job_ended, remember_groups
from services.prom_metrics import submit_latency_histogram
from services.provenance import ParentKind, submitted_values, with_parent_kind
from services.script_names import save_upload
from services.store.orm import GpuSample, Job, JobEvent, JobLog, MetricPoint, ResourceSample, SeriesCache, utcnow
from services.teams import TeamService
from services.validation import validation_problems as validation_problems  # re-exported: the history uses it
from services.workspace import Workspace

# The end of a waiting job's reason, after what cannot be reached; the sync loop carries these out when it can.
SUBMIT_WHEN_BACK = "; the job will be submitted when it is back."
# A job is handed to the backend from Submitting, or from Queued where its budget kept it in the portal.
HANDED_OVER_FROM = (JobStatus.SUBMITTING.value, JobStatus.QUEUED.value)
STOP_WHEN_BACK = "; the job will be stopped when it is back."


def parse_request(data: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise ValidationProblem(validation_problems(exc)) from None


def machine_gpus_problem(count: int) -> str:
    if count == 0:
        return "this machine has no GPU: set GPUs to 0 (the job runs on its CPU)"
    return f"this machine has {count} GPU{'s' if count != 1 else ''}: ask for at most {count}"


def set_status(s: Session, job: Job, status: JobStatus, message: str = "") -> None:
    """Every state change goes through here, so the events table is the job's full timeline."""
    if job.status == status and not message:
        return
    job.status = status.value
    job.status_group = GROUP_OF[status].value
    job.updated_at = utcnow()
    s.add(JobEvent(job_id=job.id, ts=job.updated_at, status=status.value, message=message))
    job_ended(s, job, status)  # the end's notification, in this same transaction (the outbox)


class JobService(JobQueries, JobFiles, JobCharts, JobResources):
    """The use cases; reading jobs, their logs, files and charts comes from the mixins."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], backend: Backend):
        self.settings = settings
        self.sessions = sessions
        self.backend = backend
        self.workspace = Workspace(settings)
        self.teams = TeamService(settings, sessions)  # who sees a job and who may stop it (services/teams.py)
        self.submit_latency = submit_latency_histogram()  # exported on /metrics (services/prom_metrics.py)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions.begin() as s:
            yield s

    # Validation that needs settings --------------------------------------------------------------
    def limit_problems(self, data: dict[str, Any], user: User | None = None) -> dict[str, str]:
        """The admin's limits, checked on the raw values so they are reported with the form's other problems."""
        st = self.settings
        problems: dict[str, str] = {}

        def number(field: str) -> float | None:
            try:
                return float(data.get(field))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None

        gpus, nodes, hours = number("gpus"), number("nodes"), number("max_runtime_hours")
        # Only the local backend counts its GPUs; on a cluster a job waits for them.
        machine_gpus: int | None = getattr(self.backend, "machine_gpus", None)
        if gpus is not None and gpus > st.max_gpus_per_node:
            problems["gpus"] = f"at most {st.max_gpus_per_node} GPUs per node are allowed"
        elif gpus is not None and machine_gpus is not None and gpus > machine_gpus:
            problems["gpus"] = machine_gpus_problem(machine_gpus)
        max_nodes = min(st.max_nodes, self.backend.max_nodes)
        if nodes is not None and nodes > max_nodes:
            problems["nodes"] = (
                "multi-node jobs need the Kubernetes backend; this portal runs jobs on this machine"
                if self.backend.max_nodes == 1
                else f"at most {max_nodes} nodes are allowed"
            )
        if hours is not None and hours > st.max_runtime_hours:
            problems["max_runtime_hours"] = f"at most {st.max_runtime_hours:g} hours are allowed"
        # Another job's checkpoint: this user's to use, and only plain files.
        if data.get("resume_from") and (resume := resume_problem(self, user, data["resume_from"])):
            problems["resume_from"] = resume
        if user is not None:  # the job's team: one of the submitter's (the first when none is chosen)
            try:
                self.teams.choose(user, data.get("team") or None)
            except ValidationProblem as exc:
                problems |= exc.problems
        priority = priority_choice.problem(self.backend, st, user, data.get("priority"))  # the backend's, the limits
        if priority:
            problems["priority"] = priority
        script = data.get("script")
        if user is not None and isinstance(script, str) and script.endswith(".py"):
            try:
                self.workspace.resolve(user, script)
            except FileNotFoundError:
                problems["script"] = f"'{script}' is not in your workspace"
        return problems

    def validate(self, data: dict[str, Any], user: User | None = None) -> JobRequest:
        """Every problem with a submission at once, one sentence per field (the script's for `user`)."""
        data = priority_choice.with_default(self.backend, self.settings, user, data)  # e.g. the admin's Kueue default
        limits = self.limit_problems(data, user)
        try:
            req = parse_request(data)
        except ValidationProblem as exc:
            raise ValidationProblem(limits | exc.problems) from None
        if limits:
            raise ValidationProblem(limits)
        return req

    # Use cases ---------------------------------------------------------------------------------
    def submit(
        self,
        user: User,
        data: dict[str, Any],
        upload: tuple[str, bytes] | None = None,
        parent_id: int | None = None,
        parent_kind: ParentKind = "clone",
    ) -> int:
        """Validate, record, then start. Returns the job id (also for a failed start: the row says why).
        `parent_id`: the job this one is a `parent_kind` ("clone" or "retry") of, shown on its page."""
        if upload is not None:
            data = dict(data)
            data["script"] = save_upload(self.workspace, user, upload[0], upload[1])
        req = self.validate(data, user)
        req = req.model_copy(update={"team": self.teams.choose(user, req.team or None) or ""})  # clones keep it
        began = time.monotonic()
        script_source = self.workspace.resolve(user, req.script)
        now = utcnow()
        with self.session() as s:
            # A ceiling past the team's or the user's budget is refused with the sentence that says both.
            refuse_over_budget(s, self.settings, self.backend.name, user, req.team, req.gpus, req.nodes,
                               req.max_runtime_hours)
            job = Job(
                submission_id=str(uuid.uuid4()),
                owner=user.name,
                name=req.name,
                status=JobStatus.SUBMITTING.value,
                status_group=StatusGroup.ACTIVE.value,
                backend=self.backend.name,
                request=with_parent_kind(req.model_dump(mode="json"), parent_id, parent_kind),
                gpus=req.gpus,
                nodes=req.nodes,
                cost_per_hour=hourly_rate(s, self.settings, self.backend.name, req.gpus, req.nodes),
                created_at=now,
                updated_at=now,
                total_epochs=req.epochs,
                latest_metrics={},
                final_metrics={},
                parent_id=parent_id,
                search_text=search_text(req.name, user.name, req.model_dump(mode="json"), [], ""),
                template=req.template or None,
                team=req.team or None,
            )
            s.add(job)
            s.flush()
            submission_id = job.submission_id
            s.add(JobEvent(job_id=job.id, ts=now, status=job.status, message="Submitted"))
            remember_groups(s, user.name, user.groups)  # whose team channels hear of its failure
            s.add(
                JobLog(job_id=job.id, path=str(self.backend.log_path(job.id)), offset=0, lines=0,
                       parser_state={}, updated_at=now)
            )
            job_id = job.id
        # The row exists before the backend is asked, so a crash here leaves a visible job, never a ghost.
        try:
            snapshot = write_snapshot(self.settings.jobs_dir / str(job_id), script_source,
                                      private=self.backend.name == "local")
        except OSError as exc:
            self._submit_failed(job_id, exc)
            return job_id
        self.hand_over(JobSubmission(job_id, user.name, req, snapshot, submission_id, user.groups), began)
        return job_id

    def hand_over(self, submission: JobSubmission, began: float | None = None) -> bool:
        """Ask the backend to start a recorded job and record its answer. Returns False when the backend cannot
        be reached: the job then stays Submitting, saying so, and the sync loop asks again (the same submission,
        so the job starts once)."""
        job_id = submission.job_id
        team = submission.request.team
        # The team's Kueue queue (also for a later hand-over): the one its budget's hold is judged by.
        if team and (queue := self.teams.queue_of(team) or self.settings.kueue_group_queues.get(team)):
            submission = replace(submission, queue=queue)
        if budget_wait.hold_back(self, job_id, submission.owner, team, first=began is not None):
            return True  # kept in the portal until the budget allows: the sync loop hands it over then
        try:
            result = self.backend.submit(submission)
        except BackendUnreachable as exc:
            waiting = f"{exc}{SUBMIT_WHEN_BACK}"
            with self.session() as s:
                job = s.get_one(Job, job_id)
                if job.status in HANDED_OVER_FROM and job.backend_ref is None and job.reason != waiting:
                    job.reason = waiting  # a job its budget kept back is Submitting again, as on a first try
                    set_status(s, job, JobStatus.SUBMITTING, waiting)
            return False
        except Exception as exc:  # any failure to start is recorded on the job, never left half-done
            self._submit_failed(job_id, exc)
            return True
        with self.session() as s:
            job = s.get_one(Job, job_id)
            cancelled = job.status not in HANDED_OVER_FROM
            if not cancelled:
                job.spec = result.spec
                job.backend_ref = result.ref
                job.reason = None
                set_status(s, job, result.status, "Accepted by the backend")
        if began is not None:  # a submission resumed after an outage has no start of its own here
            self.submit_latency.observe(time.monotonic() - began)
        if cancelled:  # Stop was pressed while the backend was being asked: what it started goes too
            with suppress(BackendError):  # else the sync loop's ghost removal deletes it once the backend answers
                self.backend.stop(job_id, result.ref | {"stop_requested": True})
        else:
            local_queue.admit(self)  # at once if its GPUs are free, not a sync tick later
        return True

    def _submit_failed(self, job_id: int, exc: Exception) -> None:
        if not isinstance(exc, BackendError | OSError):
            exc = BackendError(f"Could not start the job: {type(exc).__name__}: {exc}")
        with self.session() as s:
            job = s.get_one(Job, job_id)
            if job.status not in HANDED_OVER_FROM or job.backend_ref is not None:
                return  # cancelled meanwhile
            job.reason = str(exc)
            job.finished_at = utcnow()
            set_status(s, job, JobStatus.SUBMIT_FAILED, str(exc))

    def _values_for(self, user: User, job: JobView | Job) -> dict[str, Any]:
        """A job's values for a new job of `user`: someone else's script is not theirs to read in the workspace,
        so its snapshot is copied into their own folder and the new job runs that."""
        values = submitted_values(job.request)
        if values.get("team") and values["team"] not in self.teams.team_names(user):
            values.pop("team")  # a clone of another team's job goes to the cloner's own team
        if job.owner != user.name and self.workspace.multi_user:
            snapshot = self.settings.jobs_dir / str(job.id) / "script" / Path(str(values.get("script", ""))).name
            try:
                values["script"] = self.workspace.adopt(user, snapshot, job.id)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"The script that job {job.id} ran is no longer kept, so it cannot be re-run.") from None
        return values

    def _owned(self, s: Session, user: User, job_id: int) -> Job:
        job = s.get(Job, job_id) if 0 < job_id < 2**62 else None
        if job is None:
            raise NotFound(f"Job {job_id} was not found.")
        if not may_act(user, job.owner):
            raise NotFound(f"Job {job_id} was not found.")
        return job

    def _stoppable(self, s: Session, user: User, job_id: int) -> Job:
        """The job if this user may stop it: its owner, an admin or a lead of its team. A member of its team is
        told who may (403); to anyone else it is "not found", as every action on another's job."""
        job = s.get(Job, job_id) if 0 < job_id < 2**62 else None
        if job is not None and not self.teams.may_stop(user, job.owner, job.team):
            if job.team and job.team in self.teams.team_names(user):
                raise Forbidden(f"Only {job.owner} or a lead of the team {job.team} may stop job {job.name}.")
            job = None
        if job is None:
            raise NotFound(f"Job {job_id} was not found.")
        return job

    def stop(self, user: User, job_id: int) -> None:
        with local_queue.no_start_meanwhile(), self.session() as s:  # never across the start of a waiting job
            job = self._stoppable(s, user, job_id)
            if JobStatus(job.status) not in ACTIVE_STATUSES:
                raise Conflict(f"Job {job.name} has already finished ({job.status}).")
            if job.backend_ref is None and ((job.reason or "").endswith(SUBMIT_WHEN_BACK)
                                            or budget_wait.is_waiting(job.status, job.backend_ref)):
                # Never reached the backend: nothing to stop there (a submission the sync loop has in flight
                # right now is stopped by it when it sees this).
                job.reason = "Cancelled before it reached the cluster"
                job.finished_at = utcnow()
                set_status(s, job, JobStatus.STOPPED, f"Cancelled by {user.name}")
                return
            if job.backend_ref is None:
                raise Conflict(f"Job {job.name} is still being started; try Stop again in a moment.")
            # Remembered on the job: a backend that deletes the job on stop must not call it "lost".
            ref = dict(job.backend_ref or {}) | {"stop_requested": True}
            job.backend_ref = ref
            s.add(JobEvent(job_id=job.id, ts=utcnow(), status=job.status, message=f"Stop requested by {user.name}"))
        # The sync loop records the final state once the process has actually ended.
        try:
            self.backend.stop(job_id, ref)
        except BackendUnreachable as exc:
            self.stop_later(job_id, f"Stop pending: {str(exc)[0].lower()}{str(exc)[1:]}{STOP_WHEN_BACK}")

    def stop_later(self, job_id: int, message: str) -> None:
        """A stop the backend could not carry out now: kept on the job (said on its page) for the sync loop."""
        with self.session() as s:
            job = s.get_one(Job, job_id)
            job.backend_ref = dict(job.backend_ref or {}) | {"stop_pending": True}
            if job.reason != message:
                job.reason = message
                s.add(JobEvent(job_id=job_id, ts=utcnow(), status=job.status, message=message))

    def save_checkpoint(self, user: User, job_id: int) -> None:
        """Ask the running script to save a checkpoint now (recorded with when it was delivered and written)."""
        CheckpointService(self).request(user, job_id)

    def delete(self, user: User, job_id: int) -> None:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            ref = dict(job.backend_ref or {})
        self.backend.delete(job_id, ref)
        with self.session() as s:
            s.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id))
            s.execute(delete(SeriesCache).where(SeriesCache.job_id == job_id))
            s.execute(delete(GpuSample).where(GpuSample.job_id == job_id))
            s.execute(delete(ResourceSample).where(ResourceSample.job_id == job_id))
            s.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            s.execute(delete(JobLog).where(JobLog.job_id == job_id))
            s.execute(delete(Job).where(Job.id == job_id))

    def clone_values(self, user: User, job_id: int) -> dict[str, Any]:
        """The submitted values of a job, to prefill the Submit form."""
        return self._values_for(user, self.get(user, job_id))

    def retry(self, user: User, job_id: int) -> int:
        with self.session() as s:
            job = self._owned(s, user, job_id)
            if JobStatus(job.status) in ACTIVE_STATUSES:
                raise Conflict("The job is still running; stop it before retrying.")
            data = self._values_for(user, job)
        return self.submit(user, data, parent_id=job_id, parent_kind="retry")

    def scripts(self, user: User) -> list[str]:
        return self.workspace.scripts(user)

    def mark(self, job_id: int, **values: Any) -> None:
        """Set plain columns (used by the sync loop and tests)."""
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))
