"""The checkpoint use cases on SQLite and PostgreSQL with real local jobs: a request's times, who may ask, and what
a submission may resume from."""

from __future__ import annotations

import pytest

from services.auth import local_user
from services.checkpoints import CheckpointService, Forbidden
from services.models import Conflict, JobStatus, Role, User, ValidationProblem
from tests.conftest import run_to_end, wait_until
from tests.test_checkpoints_api import SCRIPT


def test_a_request_is_delivered_then_written_and_only_owners_may_ask(any_portal) -> None:
    portal = any_portal
    me = local_user(portal.settings)
    (portal.settings.workspace_dir / "ckpt.py").write_text(SCRIPT)
    job_id = portal.jobs.submit(me, {"name": "ckpt", "script": "ckpt.py", "epochs": 1})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(me, job_id).status is JobStatus.RUNNING)[1], timeout=30)
    service = CheckpointService(portal.jobs)
    with pytest.raises(Forbidden, match="may save or resume"):
        service.request(User(name="vera", role=Role.VIEWER), job_id)
    made = service.request(me, job_id)
    assert made.delivered_at >= made.requested_at and made.written_at is None
    written = wait_until(lambda: service.requests(me, job_id)[0].written_at, timeout=30)
    assert written >= made.requested_at
    service.request(me, job_id)  # the script ends after its second checkpoint
    run_to_end(portal, me, job_id)
    requests = service.requests(me, job_id)
    assert len({r.written_name for r in requests}) == 2, "each request matched to its own checkpoint"
    with pytest.raises(Conflict, match="not running"):
        service.request(me, job_id)
    events = [m for _, _, m in portal.jobs.events(job_id)]
    assert events.count(f"Checkpoint requested by {me.name}") == 2

    # Resuming: only from a checkpoint of a job of one's own (or as an admin), named as listed.
    name = requests[-1].written_name
    bob = User(name="bob", role=Role.RESEARCHER)
    values = {"name": "stolen", "script": "ckpt.py", "resume_from": f"{job_id}/{name}"}
    with pytest.raises(ValidationProblem) as refused:
        portal.jobs.validate(values, bob)
    assert "may save or resume checkpoints" in refused.value.problems["resume_from"]
    with pytest.raises(ValidationProblem) as refused:
        portal.jobs.validate(values | {"resume_from": f"{job_id}/.."}, me)
    assert "checkpoints/ folder" in refused.value.problems["resume_from"]
    assert portal.jobs.validate(values, me).resume_from == f"{job_id}/{name}"
