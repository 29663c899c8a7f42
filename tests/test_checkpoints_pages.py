"""The job page under AppTest with real local jobs: Save checkpoint shows when it was asked for, delivered and
written; the Files tab lists the checkpoints, and Retry from checkpoint starts a retry that resumes from one."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from services.models import JobStatus
from tests.conftest import run_to_end, wait_until
from tests.test_pages import texts

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


def test_save_checkpoint_then_retry_from_it_on_the_job_page(portal, user) -> None:
    job_id = portal.jobs.submit(user, {"name": "ckpt-page", "script": "train_example.py", "epochs": 6,
                                       "extra_args": "--seconds-per-epoch 1"})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, job_id).status is JobStatus.RUNNING)[1],
               timeout=30)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.query_params["id"] = str(job_id)
    at.switch_page("pages/job.py").run()
    at.button(key="checkpoint").click().run()
    assert not at.exception
    assert "Checkpoint requested" in texts(at)
    assert "Checkpoint asked for at" in texts(at) and "delivered at" in texts(at)
    job = run_to_end(portal, user, job_id)
    at.query_params["tab"] = "Files"
    at.run()
    shown = texts(at)
    assert "written at" in shown and "manual-epoch" in shown, shown
    assert "Checkpoints" in shown
    buttons = [b for b in at.button if b.label == "Retry from checkpoint"]
    assert len(buttons) == 1
    buttons[0].click().run()
    assert not at.exception
    new = portal.jobs.get(user, job_id + 1)  # the next job made: the retry
    assert (new.parent_id, new.parent_kind) == (job.id, "retry")
    assert new.request["resume_from"].startswith(f"{job.id}/manual-epoch")
    done = run_to_end(portal, user, new.id)
    assert done.status is JobStatus.SUCCEEDED
    # train_example knows no --resume-from: it says it ignores it, with the checkpoint's path.
    path = portal.jobs.backend.output_dir(job.id) / "checkpoints" / new.request["resume_from"].split("/", 1)[1]
    assert any(f"--resume-from {path}" in line for line in portal.jobs.log_tail(new.id))
