"""Save checkpoint and Retry from checkpoint through a real portal process (local backend, real jobs): the REST
API's 202/403/409 answers, the client's job.save_checkpoint(), when the checkpoint was written, and a retry that
gets the checkpoint's path as --resume-from and PORTAL_RESUME_FROM."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ml_job_portal import ConflictError, JobClient, NotFoundError

from tests.conftest import PortalServer, create_token, wait_until
from tests.test_client import local_user_name

SCRIPT = r'''
import os, signal, sys, time
from pathlib import Path
out = Path(os.environ["PORTAL_OUTPUT_DIR"])
print("resume-from:", sys.argv[sys.argv.index("--resume-from") + 1] if "--resume-from" in sys.argv else "-")
print("env resume:", os.environ.get("PORTAL_RESUME_FROM", "-"))
resumed = os.environ.get("PORTAL_RESUME_FROM")
if resumed:
    print("resumed state:", (Path(resumed) / "state.txt").read_text(), flush=True)
    sys.exit(0)
asked = []
signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
for epoch in range(1, 2000):
    print(f"Epoch {epoch}/2000", flush=True)
    time.sleep(0.1)
    if asked:
        asked.clear()
        folder = out / "checkpoints" / f"manual-epoch{epoch}"
        folder.mkdir(parents=True)
        (folder / "state.txt").write_text(f"epoch {epoch}")
        print(f"Saved checkpoint {folder.name}", flush=True)
    if (out / "checkpoints").exists() and len(list((out / "checkpoints").iterdir())) >= 2:
        break
'''


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[PortalServer, JobClient, str]]:
    server = PortalServer(tmp_path / "portal-data", env={"PORTAL_VIEWERS": "vera"}).start()
    try:
        me, vera = create_token(server.data_dir, local_user_name()), create_token(server.data_dir, "vera")
        with JobClient(server.url, me) as client:
            yield server, client, vera
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_save_checkpoint_and_retry_from_it(live: tuple[PortalServer, JobClient, str], tmp_path: Path) -> None:
    server, client, vera = live
    (tmp_path / "ckpt_train.py").write_text(SCRIPT)
    script = client.upload_script(tmp_path / "ckpt_train.py")
    job = client.submit_job(name="ckpt-demo", script=script, epochs=2000)
    wait_until(lambda: job.refresh().status == "Running", timeout=60, interval=0.2)
    wait_until(lambda: any("Epoch" in line for line in job.logs()), timeout=30, interval=0.2)

    # A viewer sees the job but may not act on it.
    answer = httpx.post(f"{server.url}/api/v1/jobs/{job.id}/checkpoint", headers={"Authorization": f"Bearer {vera}"})
    assert answer.status_code == 403 and "may save or resume checkpoints" in answer.json()["error"]

    made = job.save_checkpoint()
    assert made["requested_at"] and made["delivered_at"] and made["written_at"] is None
    wait_until(lambda: job.checkpoints()["requests"][0]["written_at"] is not None, timeout=30, interval=0.2)
    first = job.checkpoints()["requests"][0]
    assert first["checkpoint"].startswith("manual-epoch") and first["written_at"] >= first["requested_at"]
    job.save_checkpoint()  # the second one ends the script
    job.wait(timeout=60, poll=0.2)
    listed = job.checkpoints()
    assert [r["written_at"] is not None for r in listed["requests"]] == [True, True]
    assert [c["name"] for c in listed["checkpoints"]] == [r["checkpoint"] for r in reversed(listed["requests"])]

    with pytest.raises(ConflictError, match="not running"):
        job.save_checkpoint()

    with pytest.raises(NotFoundError, match="no checkpoint named"):
        job.retry_from_checkpoint("../../../etc")
    # Nothing a job writes is trusted: a checkpoint that is a link out is not listed, nor resumed from.
    output = server.data_dir / "jobs" / str(job.id) / "output"
    os.symlink("/etc", output / "checkpoints" / "sneaky")
    assert "sneaky" not in [c["name"] for c in job.checkpoints()["checkpoints"]]
    with pytest.raises(NotFoundError):
        job.retry_from_checkpoint("sneaky")

    name = first["checkpoint"]
    resumed = job.retry_from_checkpoint(name)
    resumed.wait(timeout=60, poll=0.2, raise_on_failure=True)
    path = str(output / "checkpoints" / name)
    logs = resumed.logs()
    assert f"resume-from: {path}" in logs and f"env resume: {path}" in logs
    assert f"resumed state: epoch {name.removeprefix('manual-epoch')}" in logs
    assert resumed.request["resume_from"] == f"{job.id}/{name}"
    paths = httpx.get(f"{server.url}/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/jobs/{job_id}/checkpoint", "/api/v1/jobs/{job_id}/checkpoints/retry"} <= set(paths)
    detail = client._json("GET", f"jobs/{resumed.id}")
    assert (detail["parent_id"], detail["parent_kind"]) == (job.id, "retry")
