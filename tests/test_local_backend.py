"""The local backend with real child processes: outcomes, stop, runtime limit, restart."""

import json
import os
import signal
import time

from services.models import JobStatus
from services.portal import build_portal, get_portal
from tests.conftest import run_to_end, wait_until

LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"


def submit(portal, user, script, **kw):
    return portal.jobs.submit(user, {"name": kw.pop("name", "t"), "script": script, **kw})


def wait_running(portal, user, job_id):
    def running():
        portal.sync.tick()
        return portal.jobs.get(user, job_id).status is JobStatus.RUNNING

    wait_until(running, timeout=20)


def test_example_script_succeeds_with_logs_metrics_and_files(portal, user):
    job_id = submit(portal, user, "train_example.py", epochs=3, extra_args="--seconds-per-epoch 0", name="ex")
    job = run_to_end(portal, user, job_id)
    assert job.status is JobStatus.SUCCEEDED, job.reason
    assert job.exit_code == 0 and job.progress == 1.0
    assert (job.epoch, job.total_epochs) == (3, 3)
    assert set(job.final_metrics) >= {"loss", "accuracy"}
    assert any("Training finished" in line for line in portal.jobs.log_tail(job_id))
    series = portal.jobs.metric_series(job_id)
    assert len(series["loss"].y) == 3
    assert series["loss"].axis == "epoch" and list(series["loss"].x) == [1.0, 2.0, 3.0]
    assert {f.path for f in portal.jobs.output_files(job_id)} >= {"model.json", "metrics.json"}
    # The exact spec records argv as a list with the form's values as flags.
    argv = job.spec["argv"]
    assert argv[argv.index("--epochs") + 1] == "3"
    assert job.spec["env"]["PORTAL_EPOCHS"] == "3"
    statuses = [e[1] for e in portal.jobs.events(job_id)]
    assert statuses[0] == "Submitting" and statuses[-1] == "Succeeded" and "Running" in statuses


def test_exit_code_becomes_the_reason(portal, user, workspace_script):
    s = workspace_script("exit2.py", "import sys\nprint('bad arguments')\nsys.exit(2)\n")
    job = run_to_end(portal, user, submit(portal, user, s))
    assert job.status is JobStatus.FAILED
    assert job.reason == "Exited with code 2"


def test_cuda_out_of_memory_is_recognised(portal, user, workspace_script):
    s = workspace_script(
        "oom.py",
        "raise RuntimeError('CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.2 GiB total capacity)')\n",
    )
    job = run_to_end(portal, user, submit(portal, user, s))
    assert (job.status, job.reason) == (JobStatus.FAILED, "Out of GPU memory")


def test_sigkill_is_reported_as_out_of_memory(portal, user, workspace_script):
    s = workspace_script("killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    job = run_to_end(portal, user, submit(portal, user, s))
    assert (job.status, job.reason) == (JobStatus.FAILED, "Killed: out of memory")


def test_max_runtime_is_enforced(portal, user, workspace_script):
    s = workspace_script("loop.py", LOOP)
    job = run_to_end(portal, user, submit(portal, user, s, max_runtime_hours=0.0005))  # 1.8 s
    assert job.status is JobStatus.FAILED
    assert job.reason == "Hit max runtime (2 s)"


def test_stop_sends_sigterm_then_sigkill_after_grace(portal, user, workspace_script):
    # This script ignores SIGTERM: only the SIGKILL after the grace period (2 s in tests) ends it.
    s = workspace_script("stubborn.py", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + LOOP)
    job_id = submit(portal, user, s)
    wait_running(portal, user, job_id)
    # Its first line comes after the handler is set: a loaded machine can report it running before that.
    log = portal.jobs.backend.log_path(job_id)
    wait_until(lambda: log.exists() and "Epoch 1/600" in log.read_text(errors="replace"), timeout=20)
    t0 = time.monotonic()
    portal.jobs.stop(user, job_id)
    job = run_to_end(portal, user, job_id)
    assert (job.status, job.reason) == (JobStatus.STOPPED, "Stopped by user")
    assert 1.5 < time.monotonic() - t0 < 15
    state = json.loads((portal.settings.jobs_dir / str(job_id) / "state.json").read_text())
    assert state["escalated"] is True


def test_save_checkpoint_signal_reaches_the_script(portal, user):
    job_id = submit(portal, user, "train_example.py", epochs=30, extra_args="--seconds-per-epoch 0.3")
    wait_running(portal, user, job_id)
    time.sleep(1.0)  # the script installs its handler first thing; give it a moment to start
    portal.jobs.save_checkpoint(user, job_id)
    out = portal.jobs.backend.output_dir(job_id) / "checkpoints"
    wait_until(lambda: any(out.glob("manual-*.json")) if out.exists() else False, timeout=15)
    portal.jobs.stop(user, job_id)
    assert run_to_end(portal, user, job_id).status is JobStatus.STOPPED


def test_running_job_is_found_again_after_a_portal_restart(portal, user, workspace_script):
    s = workspace_script("loop.py", LOOP)
    job_id = submit(portal, user, s)
    wait_running(portal, user, job_id)
    portal.close()  # the portal goes away; the job keeps running

    again = build_portal(portal.settings)
    again.sync.tick()
    job = again.jobs.get(user, job_id)
    assert job.status is JobStatus.RUNNING
    again.jobs.stop(user, job_id)
    assert run_to_end(again, user, job_id).status is JobStatus.STOPPED
    again.close()


def test_job_that_vanished_while_the_portal_was_down_is_marked_lost(portal, user, workspace_script):
    s = workspace_script("loop.py", LOOP)
    job_id = submit(portal, user, s)
    wait_running(portal, user, job_id)
    portal.close()
    state = json.loads((portal.settings.jobs_dir / str(job_id) / "state.json").read_text())
    os.kill(state["runner_pid"], signal.SIGKILL)
    os.killpg(state["child_pid"], signal.SIGKILL)
    portal.jobs.backend._procs.clear()  # the old portal process would have been gone with its children

    again = build_portal(portal.settings)
    job = run_to_end(again, user, job_id, timeout=10)
    assert job.status is JobStatus.FAILED
    assert job.reason.startswith("Lost:")
    again.close()


def test_delete_removes_rows_and_files(portal, user):
    job_id = submit(portal, user, "train_example.py", epochs=1, extra_args="--seconds-per-epoch 0")
    run_to_end(portal, user, job_id)
    job_dir = portal.settings.jobs_dir / str(job_id)
    assert job_dir.exists()
    portal.jobs.delete(user, job_id)
    assert not job_dir.exists()
    assert portal.jobs.list_jobs() == []
    assert portal.jobs.metric_names(job_id) == []


def test_retry_and_clone_reuse_the_submitted_values(portal, user):
    job_id = submit(portal, user, "train_example.py", epochs=1, learning_rate=0.05,
                    extra_args="--seconds-per-epoch 0", name="orig")
    run_to_end(portal, user, job_id)
    assert portal.jobs.clone_values(user, job_id)["learning_rate"] == 0.05
    new_id = portal.jobs.retry(user, job_id)
    assert new_id != job_id
    assert run_to_end(portal, user, new_id).request == portal.jobs.get(user, job_id).request


def test_get_portal_is_one_per_process(data_dir):
    assert get_portal() is get_portal()
