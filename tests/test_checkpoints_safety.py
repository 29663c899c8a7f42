"""What a job cannot do to the checkpoint another job resumes from: swap it while it still runs (resuming from
a running job is refused), or put a link partway along the path the sandboxed copy reads (nothing is read through
it). Real local jobs, real files and links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.checkpoints import copy_checkpoint
from services.models import JobStatus, ValidationProblem
from tests.conftest import run_to_end, wait_until

WRITES_THEN_WAITS = ('import os, pathlib, time\n'
                     'd = pathlib.Path(os.environ["PORTAL_OUTPUT_DIR"]) / "checkpoints" / "step1"\n'
                     'd.mkdir(parents=True); (d / "state.txt").write_text("step 1")\n'
                     'while not pathlib.Path(os.environ["PORTAL_OUTPUT_DIR"], "stop").exists(): time.sleep(0.1)\n')


def test_a_running_jobs_checkpoint_is_not_resumed_from_until_it_has_ended(portal, user, workspace_script) -> None:
    job_id = portal.jobs.submit(user, {"name": "writer", "script": workspace_script("w.py", WRITES_THEN_WAITS)})
    output = portal.jobs.backend.output_dir(job_id)
    wait_until(lambda: (portal.sync.tick(), (output / "checkpoints" / "step1" / "state.txt").exists())[1],
               timeout=30)
    values = {"name": "resumed", "script": "w.py", "resume_from": f"{job_id}/step1"}
    with pytest.raises(ValidationProblem) as refused:
        portal.jobs.validate(values, user)
    assert "still running" in refused.value.problems["resume_from"]
    (output / "stop").write_text("")
    assert run_to_end(portal, user, job_id).status is JobStatus.SUCCEEDED
    assert portal.jobs.validate(values, user).resume_from == f"{job_id}/step1"


def test_the_sandboxed_copy_reads_nothing_through_a_link_along_the_path(tmp_path: Path) -> None:
    others = tmp_path / "someone-else" / "step1"
    others.mkdir(parents=True)
    (others / "secret.txt").write_text("not yours")
    output = tmp_path / "jobs" / "7" / "output"
    output.mkdir(parents=True)
    os.symlink(others.parent, output / "checkpoints")  # the whole checkpoints/ folder swapped for a link
    dest = copy_checkpoint(output / "checkpoints" / "step1", tmp_path / "jobs" / "8" / "resume" / "step1",
                           os.getgid())
    assert not (dest / "secret.txt").exists()

    os.unlink(output / "checkpoints")
    (output / "checkpoints" / "step1" / "deep").mkdir(parents=True)
    (output / "checkpoints" / "step1" / "deep" / "own.txt").write_text("mine")
    (output / "checkpoints" / "step1" / "weights.bin").write_bytes(b"w" * 10)
    os.symlink(others, output / "checkpoints" / "step1" / "linked")
    dest = copy_checkpoint(output / "checkpoints" / "step1", tmp_path / "jobs" / "9" / "resume" / "step1",
                           os.getgid())
    assert (dest / "deep" / "own.txt").read_text() == "mine" and (dest / "weights.bin").stat().st_size == 10
    assert not (dest / "linked").exists() and (dest / "weights.bin").stat().st_mode & 0o777 == 0o640
