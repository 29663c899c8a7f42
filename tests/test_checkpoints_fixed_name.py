"""A script that saves every checkpoint under one name (checkpoints/latest.pt): each "Save checkpoint" request shows
"written" once that file was written again after it (a real local job on SQLite)."""

from __future__ import annotations

from services.checkpoints import CheckpointService
from services.models import JobStatus
from tests.conftest import run_to_end, wait_until

LATEST = r'''
import os, signal, time
from pathlib import Path
out = Path(os.environ["PORTAL_OUTPUT_DIR"]) / "checkpoints"
out.mkdir(parents=True, exist_ok=True)
asked, saved = [], [0]
signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
while saved[0] < 2:
    time.sleep(0.05)
    if asked:
        asked.clear()
        saved[0] += 1
        (out / "latest.pt").write_bytes(b"state %d" % saved[0])
        print("Saved checkpoint latest.pt", saved[0], flush=True)
'''


def test_each_request_is_written_when_the_script_saves_to_one_name(portal, user, workspace_script) -> None:
    job_id = portal.jobs.submit(user, {"name": "latest", "script": workspace_script("latest.py", LATEST)})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, job_id).status is JobStatus.RUNNING)[1], timeout=30)
    service = CheckpointService(portal.jobs)
    first = service.request(user, job_id)
    wait_until(lambda: service.requests(user, job_id)[0].written_at, timeout=30)
    second = service.request(user, job_id)
    assert run_to_end(portal, user, job_id).status is JobStatus.SUCCEEDED
    shown = {r.id: r for r in service.requests(user, job_id)}
    assert shown[first.id].written_name == "latest.pt"
    assert shown[second.id].written_name == "latest.pt", "the second request never showed as written"
    assert shown[second.id].written_at >= second.requested_at > shown[first.id].written_at
