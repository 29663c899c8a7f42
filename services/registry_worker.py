"""The registry worker: a worker of the sync loop (it runs where the loop runs, the leader) that carries out pending
model registrations one at a time, after a restart too.

For each: the chosen files are copied, without following any link, into a folder of the portal's own (what is
uploaded is what was checked, whatever the job's files become meanwhile), then services/registry_upload.py, a
child process, talks to MLflow: the credentials go into that child's environment only, never into the portal's,
whose local jobs inherit it. A portal killed mid-upload leaves the row pending; the next start runs it again and the
child finds the run and the version tagged with the registration's id before making any. A failure MLflow can
recover from (not reachable, 5xx) is retried with a growing wait, up to MAX_ATTEMPTS; one it cannot (a refused
login, a bad name) fails at once, each with a sentence on the job page.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select, update

from services.jobs import JobService, to_view
from services.leader import election_wanted
from services.model_registry import output_root, remembered_groups, selected_files
from services.models import JobView
from services.registry_process import UploadProcess
from services.safe_files import UnsafeFile, open_read
from services.store.orm import Job, utcnow
from services.store.registry_tables import DONE, FAILED, PENDING, ModelRegistration
from services.worker_thread import PeriodicWorker

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
RETRY_SECONDS = 15.0
CLAIM_SLACK_SECONDS = 60.0  # past the upload deadline, before a claim counts as its worker's death
UPLOAD_TIMEOUT_SECONDS = 6 * 3600.0  # a model of many GB over a slow link; MLflow's own requests time out sooner
ARTIFACT_PATH = "model"


def _read(path: str) -> str:
    return Path(path).expanduser().read_text().strip() if path else ""


def login_for(settings: Any, uri: str, groups: tuple[str, ...]) -> dict[str, str]:
    """The MLflow login for a registration to `uri`, as MLflow's variables, read from its files now (a rotated token
    needs no restart): the first group of the job's owner with its own login (mlflow_group_credentials) whose
    server this is, so that a team's login never goes to another server; else the portal's one login."""
    source = {"token_file": settings.mlflow_token_file, "username": settings.mlflow_username,
              "password_file": settings.mlflow_password_file}
    for group, login in settings.mlflow_group_credentials.items():
        if group in groups and settings.mlflow_group_uris.get(group, settings.mlflow_tracking_uri) == uri:
            source = login
            break
    if source.get("token_file"):
        return {"MLFLOW_TRACKING_TOKEN": _read(source["token_file"])}
    if source.get("username"):
        return {"MLFLOW_TRACKING_USERNAME": source["username"],
                "MLFLOW_TRACKING_PASSWORD": _read(source.get("password_file", ""))}
    return {}


def _params(job: JobView) -> dict[str, str]:
    """The submitted values as MLflow params (strings, keys MLflow accepts, values within its 6,000 characters)."""
    out: dict[str, str] = {}
    for key, value in sorted(job.request.items()):
        if value is None or value == "" or value == [] or value == {}:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        safe_key = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(key))[:250]
        out[safe_key] = text[:6000]
    return out


def plan(row: ModelRegistration, job: JobView, staged: Path, public_url: str) -> dict[str, Any]:
    link = f"{public_url.rstrip('/')}/job?id={job.id}" if public_url else f"/job?id={job.id}"
    tags = {"portal.registration": row.key, "portal.job_id": str(job.id), "portal.owner": job.owner,
            "portal.job_url": link, "portal.job_name": job.name, "portal.registered_by": row.requested_by}
    return {
        "tracking_uri": row.tracking_uri, "key": row.key, "experiment": job.name, "run_name": f"{job.name} #{job.id}",
        "model_name": row.model_name, "alias": row.alias, "staged": str(staged), "artifact_path": ARTIFACT_PATH,
        "params": _params(job), "tags": tags,
        "metrics": {k: float(v) for k, v in job.final_metrics.items()
                    if isinstance(v, int | float) and math.isfinite(v)},
        "description": f"From the ML Job Portal's job #{job.id} ({job.name}) of {job.owner}: {link}",
    }


def stage(jobs: JobService, job_id: int, paths: list[str], dest: Path) -> None:
    """Copy the chosen files into dest, checked again now and opened without following links."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, mode=0o700)
    root, prefix = output_root(jobs, job_id)
    for path in paths:
        for rel in selected_files(root, prefix, path):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(open_read(root, prefix / PurePosixPath(rel)), "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


class RegistryWorker(PeriodicWorker):
    thread_name = "portal-registry"

    def __init__(self, jobs: JobService, interval: float = 1.0):
        super().__init__(interval)
        self.jobs = jobs
        self.settings = jobs.settings
        self.uploads = UploadProcess(self.settings.data_dir / "tmp" / "registry-upload")

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.uploads.close()

    def start(self) -> None:
        if not election_wanted(self.settings):
            self.recover_claims()
        super().start()

    def recover_claims(self) -> None:
        """A sole replica starting: whatever was claimed was claimed by a process that is gone, due again now."""
        with self.jobs.session() as s:
            s.execute(update(ModelRegistration).where(ModelRegistration.status == PENDING,
                                                      ModelRegistration.attempts > 0)
                      .values(next_attempt_at=utcnow()))

    def tick(self) -> int:
        """Every due registration, oldest first (one at a time: each is a long upload)."""
        done = 0
        while not self._stop.is_set() and self.run_due():
            done += 1
        return done

    def run_due(self) -> bool:
        """Carry out the oldest due registration; False when none is due."""
        with self.jobs.session() as s:
            row = s.scalars(select(ModelRegistration).where(ModelRegistration.status == PENDING,
                                                            ModelRegistration.next_attempt_at <= utcnow())
                            .order_by(ModelRegistration.id).limit(1)).first()
            if row is None:
                return False
            reg_id = row.id
            row.attempts += 1
            # Claimed until the upload's own deadline: a replica that takes over meanwhile (its child may still run
            # on the old leader) does not upload it a second time.
            row.next_attempt_at = utcnow() + timedelta(seconds=UPLOAD_TIMEOUT_SECONDS + CLAIM_SLACK_SECONDS)
            job_row = s.get(Job, row.job_id)
            job = to_view(job_row) if job_row is not None else None
            s.expunge(row)
        outcome = self._attempt(row, job)
        with self.jobs.session() as s:
            current = s.get(ModelRegistration, reg_id)
            if current is None:  # the job was deleted meanwhile
                return True
            if outcome.get("ok"):
                current.status, current.error, current.finished_at = DONE, None, utcnow()
                current.run_id, current.version = outcome.get("run_id"), str(outcome.get("version"))
                current.model_url = outcome.get("model_url")
            elif outcome.get("transient") and current.attempts < MAX_ATTEMPTS:
                current.error = outcome.get("error")
                current.next_attempt_at = utcnow() + timedelta(seconds=RETRY_SECONDS * 2 ** (current.attempts - 1))
            else:
                current.status, current.finished_at = FAILED, utcnow()
                current.error = outcome.get("error") or "MLflow did not register the model."
                if outcome.get("transient"):
                    current.error = f"{current.error.rstrip('.')} (tried {current.attempts} times)."
        return True

    def _attempt(self, row: ModelRegistration, job: JobView | None) -> dict[str, Any]:
        if job is None:
            return {"error": "The job was deleted."}
        staged = self.settings.data_dir / "tmp" / f"registry-{row.key}"
        try:
            stage(self.jobs, job.id, list(row.paths), staged / "files")
        except UnsafeFile as exc:
            return {"error": f"{str(exc)[0].upper()}{str(exc)[1:]}."}
        except OSError as exc:
            return {"error": f"The job's files could not be read: {exc.strerror or exc}.", "transient": True}
        try:
            return self._upload(plan(row, job, staged / "files", self.settings.public_url), job.owner)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _upload(self, the_plan: dict[str, Any], owner: str) -> dict[str, Any]:
        try:
            with self.jobs.session() as s:
                groups = remembered_groups(s, owner)
            login = login_for(self.settings, the_plan["tracking_uri"], groups)
        except OSError as exc:
            return {"error": f"The MLflow login could not be read: {exc.strerror or exc}.", "transient": True}
        return self.uploads.ask(the_plan, login, UPLOAD_TIMEOUT_SECONDS)
