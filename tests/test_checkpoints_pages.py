"""The job page under AppTest with real local jobs: Save checkpoint shows when it was asked for, delivered and
written; the Files tab lists the checkpoints, and Retry from checkpoint starts a retry that resumes from one."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from services.checkpoints import CheckpointService
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


RESUMABLE = r'''
import os, sys
from pathlib import Path
out = Path(os.environ["PORTAL_OUTPUT_DIR"])
start = 1
if os.environ.get("PORTAL_RESUME_FROM"):
    start = int((Path(os.environ["PORTAL_RESUME_FROM"]) / "step.txt").read_text()) + 1
for step in range(start, 7):
    loss = 1.0 / step if start == 1 else 10.0 + step  # the resumed run's own values, to tell them apart
    print(f"step={step} loss={loss}", flush=True)
    if step == 3 and start == 1:
        (out / "checkpoints" / "step3").mkdir(parents=True)
        (out / "checkpoints" / "step3" / "step.txt").write_text("3")
'''


def test_a_resumed_jobs_curves_continue_its_parents(portal, user, workspace_script) -> None:
    script = workspace_script("resumable.py", RESUMABLE)
    parent = portal.jobs.submit(user, {"name": "resumable", "script": script, "epochs": 1})
    run_to_end(portal, user, parent)
    child = CheckpointService(portal.jobs).retry_from(user, parent, "step3")
    assert run_to_end(portal, user, child).status is JobStatus.SUCCEEDED
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.query_params["id"] = str(child)
    at.query_params["tab"] = "Metrics"
    at.switch_page("pages/job.py").run()
    assert not at.exception
    spec = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if '"loss"' in c.proto.spec))
    trace = next(t for t in spec["data"] if t.get("name") == "loss")
    assert values(trace["x"]) == [1, 2, 3, 4, 5, 6]  # the parent's steps before the checkpoint, then its own
    assert [round(y, 3) for y in values(trace["y"])] == [1.0, 0.5, 0.333, 14.0, 15.0, 16.0]


def values(encoded: dict | list) -> list[float]:
    """Plotly's typed arrays ({"dtype": "f8", "bdata": base64}) as numbers."""
    if isinstance(encoded, list):
        return encoded
    return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]).tolist()


def test_compare_draws_a_resumed_runs_curve_continuing_its_parents(portal, user, workspace_script) -> None:
    script = workspace_script("resumable.py", RESUMABLE)
    parent = portal.jobs.submit(user, {"name": "resumable", "script": script, "epochs": 1})
    run_to_end(portal, user, parent)
    child = CheckpointService(portal.jobs).retry_from(user, parent, "step3")
    assert run_to_end(portal, user, child).status is JobStatus.SUCCEEDED
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/compare.py")
    at.query_params["ids"] = f"{parent},{child}"
    at.run()
    assert not at.exception
    spec = json.loads(next(c.proto.spec for c in at.get("plotly_chart") if '"loss"' in c.proto.spec))
    by_name = {t["name"]: t for t in spec["data"]}
    resumed = by_name[f"resumable #{child}"]
    assert values(resumed["x"]) == [1, 2, 3, 4, 5, 6]  # the parent's steps before the checkpoint, then its own
    assert [round(y, 3) for y in values(resumed["y"])] == [1.0, 0.5, 0.333, 14.0, 15.0, 16.0]
    assert values(by_name[f"resumable #{parent}"]["x"]) == [1, 2, 3, 4, 5, 6]  # the parent's own, untouched
