"""The original design's notebook example, as it is written there, against a real portal: `train.py` is the
user's own script, uploaded with `client.upload("train.py")` and then found by that name."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ml_job_portal import PortalError, ValidationError

from tests import test_client
from tests.conftest import ROOT
from tests.test_client import Live

live = test_client.live  # this module's portal, started as test_client starts its own

# The "Alternative: Jupyter-Based Approach" of the original design, word for word but for the portal's address.
DESIGN_EXAMPLE = """
from ml_job_portal import JobClient

client = JobClient(cluster_url='https://ml-jobs.cluster.com')

# Submit job interactively
job = client.submit_job(
    name='gpt-finetune-v3',
    script='train.py',
    learning_rate=0.001,
    epochs=100,
    batch_size=32
)

# Monitor in notebook
for log in job.stream_logs():
    print(log)

# Get results
results = job.get_results()
print(f"Final loss: {results.final_loss}")
"""

# The researcher's own train.py: it reads the values the portal passes (docs/scripts.md) and trains quickly.
TRAIN_PY = """
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--learning-rate", type=float)
parser.add_argument("--epochs", type=int)
parser.add_argument("--batch-size", type=int)
args, _ = parser.parse_known_args()
print(f"VERSION {V} lr={args.learning_rate} bs={args.batch_size}")
for epoch in range(1, args.epochs + 1):
    print(f"Epoch {epoch}/{args.epochs}")
    print(f"Loss: {1.0 / (epoch + V):.4f}")
"""


def train_py(version: int) -> str:
    return f"V = {version}\n{TRAIN_PY}"


def run_notebook(live: Live, cwd: Path, code: str) -> str:
    code = code.replace("https://ml-jobs.cluster.com", live.server.url)
    # The checkout's client first on the path; the token from the environment, as the example expects.
    pythonpath = os.pathsep.join(p for p in [str(ROOT / "client"), os.environ.get("PYTHONPATH", "")] if p)
    env = dict(os.environ, PORTAL_TOKEN=live.token, PYTHONPATH=pythonpath)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.timeout(240)
def test_the_design_example_runs_the_uploaded_train_py(live: Live, tmp_path: Path):
    (tmp_path / "train.py").write_text(train_py(1))
    out = run_notebook(live, tmp_path, "from ml_job_portal import JobClient\n"
                       "print(JobClient(cluster_url='https://ml-jobs.cluster.com').upload('train.py'))\n")
    assert out.strip().startswith("uploads/train")

    out = run_notebook(live, tmp_path, DESIGN_EXAMPLE)
    assert "VERSION 1 lr=0.001 bs=32" in out and "Epoch 100/100" in out
    assert "Final loss: 0.0099" in out  # 1 / (100 + 1), the last the script printed

    # Edited and uploaded again: the same name now runs the new version (the old upload is kept for its job).
    (tmp_path / "train.py").write_text(train_py(2))
    run_notebook(live, tmp_path, "from ml_job_portal import JobClient\n"
                 "JobClient(cluster_url='https://ml-jobs.cluster.com').upload('train.py')\n")
    out = run_notebook(live, tmp_path, DESIGN_EXAMPLE)
    assert "VERSION 2 " in out and "Final loss: 0.0098" in out
    jobs = [j for j in live.client.list_jobs(limit=None) if j.name == "gpt-finetune-v3"]
    assert [j.status for j in jobs] == ["Succeeded", "Succeeded"]
    assert jobs[1].script().strip() == train_py(1).strip() and jobs[0].script().strip() == train_py(2).strip()
    assert jobs[0].request["script"] != jobs[1].request["script"]  # each names the exact upload it ran
    # The first job's script against the workspace's train.py of today: the second upload's changes.
    diff = jobs[1].script_diff()
    assert f"+++ workspace: {jobs[0].request['script']}" in diff and "-V = 1" in diff and "+V = 2" in diff
    assert jobs[0].script_diff() == "" and jobs[0].script_diff(against=jobs[1]).count("\n-V = 2") == 1

    # Uploading the first version again makes it the newest once more.
    (tmp_path / "train.py").write_text(train_py(1))
    live.client.upload(tmp_path / "train.py")
    job = live.client.submit_job(name="back-to-v1", script="train.py", epochs=1)
    assert job.request["script"] == jobs[1].request["script"]
    with contextlib.suppress(PortalError):
        job.wait(timeout=60, poll=0.3)


def test_a_script_that_is_not_uploaded_says_how_to_upload_it(live: Live):
    with pytest.raises(ValidationError) as exc:
        live.client.submit_job(name="no-script", script="missing_train.py", epochs=0)
    problems = exc.value.problems
    assert problems["script"].startswith("'missing_train.py' is not in your workspace: upload it first with "
                                         "client.upload('missing_train.py')")
    assert "epochs" in problems  # the other fields' problems come with it
    assert not [j for j in live.client.list_jobs(limit=None) if j.name == "no-script"]


def test_upload_refuses_what_the_submit_page_refuses(live: Live, tmp_path: Path):
    cases = {"notes.txt": (b"print(1)\n", "not a Python file"), "broken.py": (b"def (:\n", "not valid Python"),
             "empty.py": (b"  \n", "the file is empty"), "huge.py": (b"#" * 6_000_000, "limit of 5 MB")}
    for name, (data, sentence) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PortalError) as exc:
            live.client.upload(tmp_path / name)
        assert sentence in str(exc.value), (name, str(exc.value))
        assert exc.value.status_code in (413, 422)
    assert not [f for f in live.client.workspace_files() if Path(f["path"]).stem in ("notes", "broken", "empty",
                                                                                      "huge")]
    with pytest.raises(FileNotFoundError, match=r"No file 'nowhere\.py' here to upload"):
        live.client.upload("nowhere.py")


def test_a_bare_name_is_the_users_newest_file_of_it(tmp_path: Path):
    from services.config import Settings
    from services.models import User
    from services.portal import build_portal
    from services.script_names import save_upload, script_path

    for mode in ("single", "proxy"):
        portal = build_portal(Settings(data_dir=tmp_path / mode, auth_mode=mode, backend="local"))
        try:
            ws, ada = portal.jobs.workspace, User("ada")
            own = ws.own_dir(ada)
            # Nothing of hers yet: the example everyone has (in single mode her own folder holds it).
            assert script_path(ws, ada, "train_example.py") == "train_example.py"
            upload = save_upload(ws, ada, "train_example.py", b"print('mine')\n")
            assert upload == "uploads/train_example.py" and script_path(ws, ada, "train_example.py") == upload
            assert portal.jobs.workspace.resolve(ada, script_path(ws, ada, "train_example.py")).read_bytes() == (
                b"print('mine')\n")
            if mode == "single":  # her own train_example.py, edited by hand after the upload, is newer
                os.utime(own / upload, ns=(10**18, 10**18))
                os.utime(own / "train_example.py", ns=(2 * 10**18, 2 * 10**18))
                assert script_path(ws, ada, "train_example.py") == "train_example.py"
            # A path means exactly that file; a name she has nothing of is left for validation to refuse.
            assert script_path(ws, ada, "uploads/train_example.py") == "uploads/train_example.py"
            assert script_path(ws, ada, "nothing.py") == "nothing.py"
        finally:
            portal.close()


@pytest.mark.parametrize("script", ["a" * 300 + ".py", "x\x00.py"])
def test_a_script_name_no_file_can_have_is_refused_as_such_not_a_server_error(live: Live, script: str):
    with pytest.raises(ValidationError) as exc:
        live.client.submit_job(name="odd-script", script=script)
    assert exc.value.problems["script"]
