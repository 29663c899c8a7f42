"""Retry from checkpoint on a multi-user portal with local jobs: each job runs under its own UID, which cannot read
another job's output, so the resumed job reads a copy of the checkpoint made for it (its group's only)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PortalServer, create_token, sandbox_python, sandbox_skip_reason, wait_until

pytestmark = pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
WRITER = ('import os, pathlib; d = pathlib.Path("checkpoints/step7"); d.mkdir(parents=True); '
          '(d / "state.txt").write_text("step 7")\n')
READER = ('import os, pathlib, sys; p = pathlib.Path(os.environ["PORTAL_RESUME_FROM"]); '
          'print("resumed:", (p / "state.txt").read_text(), "uid", os.getuid(), flush=True)\n')


def test_a_sandboxed_retry_reads_its_own_copy_of_the_checkpoint(open_tmp_path) -> None:
    data = open_tmp_path / "portal-data"
    server = PortalServer(data, env={"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()})
    server.start()
    try:
        alice = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {create_token(data, 'alice')}"},
                             timeout=30)

        def finished(job_id: int) -> dict:
            return wait_until(lambda: (j := alice.get(f"/api/v1/jobs/{job_id}").json())["finished"] and j, timeout=90)

        # One script: it writes the checkpoint, or (resumed) reads it.
        script = "import os\n" + "exec(" + repr(READER) + " if os.environ.get('PORTAL_RESUME_FROM') else " + \
            repr(WRITER) + ")\n"
        up = alice.post("/api/v1/files", files={"file": ("resumable.py", script.encode(), "text/x-python")})
        first = alice.post("/api/v1/jobs", json={"name": "writer", "script": up.json()["script"], "epochs": 1}).json()
        assert finished(first["id"])["status"] == "Succeeded"
        retry = alice.post(f"/api/v1/jobs/{first['id']}/checkpoints/retry", json={"checkpoint": "step7"})
        assert retry.status_code == 201, retry.text
        done = finished(retry.json()["id"])
        lines = alice.get(f"/api/v1/jobs/{done['id']}/logs", params={"tail": 20}).json()["lines"]
        assert done["status"] == "Succeeded", lines
        assert any(line.startswith("resumed: step 7 uid") for line in lines), lines
        copy = data / "jobs" / str(done["id"]) / "resume" / "step7" / "state.txt"
        assert copy.read_text() == "step 7" and copy.stat().st_mode & 0o777 == 0o640  # the job's group only
    finally:
        server.stop()
