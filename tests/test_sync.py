"""The sync loop: reads only new bytes, never half a line, and survives its own failures."""

import pytest

from services.backends.base import ActiveJob, Observation
from services.models import JobStatus
from services.store.orm import Job, JobLog
from services.sync import NotLeading
from tests.conftest import run_to_end, wait_until


def test_half_written_lines_wait_for_their_end(portal, user, workspace_script):
    s = workspace_script("slow.py", "import sys, time\nsys.stdout.write('Loss: 0.3')\nsys.stdout.flush()\n"
                                    "time.sleep(1.5)\nprint('5')\n")
    job_id = portal.jobs.submit(user, {"name": "half", "script": s})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, job_id).status is JobStatus.RUNNING)[1])
    portal.sync.tick()
    assert portal.jobs.get(user, job_id).latest_metrics == {}  # 'Loss: 0.3' might still become 'Loss: 0.35'
    job = run_to_end(portal, user, job_id)
    assert job.final_metrics == {"loss": 0.35}


def test_cursor_advances_and_is_stored(portal, user):
    job_id = portal.jobs.submit(user, {"name": "c", "script": "train_example.py", "epochs": 2,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    with portal.jobs.session() as s:
        log = s.get(JobLog, job_id)
        path = portal.jobs.backend.log_path(job_id)
        assert log.offset == path.stat().st_size
        assert log.lines == len(path.read_text().splitlines()) == 8
    assert portal.sync.ingest_logs(job_id) == 0  # nothing new: nothing re-read


def test_background_loop_runs_and_reports(portal, user):
    portal.sync.start()
    try:
        job_id = portal.jobs.submit(user, {"name": "bg", "script": "train_example.py", "epochs": 1,
                                           "extra_args": "--seconds-per-epoch 0"})
        wait_until(lambda: portal.jobs.get(user, job_id).status is JobStatus.SUCCEEDED, timeout=30)
        assert portal.sync.alive and portal.sync.ticks > 0 and portal.sync.last_error is None
    finally:
        portal.sync.stop()
    assert not portal.sync.alive


def test_submission_abandoned_by_a_crashed_portal_is_marked_failed(portal, user):
    from datetime import timedelta

    from services.store.orm import utcnow

    job_id = portal.jobs.submit(user, {"name": "crash", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    # Simulate the row a portal leaves when it dies between recording a job and starting it.
    portal.jobs.mark(job_id, status="Submitting", status_group="Running", backend_ref=None,
                     created_at=utcnow() - timedelta(minutes=5))
    portal.sync.tick()
    job = portal.jobs.get(user, job_id)
    assert job.status is JobStatus.SUBMIT_FAILED
    assert "stopped while submitting" in job.reason


def test_nan_loss_neither_stalls_the_loop_nor_becomes_a_point(portal, user, workspace_script):
    s = workspace_script("diverge.py", "print('Epoch 1/2')\nprint('loss: 0.5')\nprint('Epoch 2/2')\n"
                                       "print('loss: nan epoch: nan')\n"
                                       "print('##portal {\"total_epochs\": Infinity}')\n")
    job = run_to_end(portal, user, portal.jobs.submit(user, {"name": "nan", "script": s}))
    assert job.status is JobStatus.SUCCEEDED
    assert job.epoch == 2 and job.total_epochs == 2
    import math

    assert math.isnan(job.final_metrics["loss"])  # the card can say the loss went NaN
    assert list(portal.jobs.metric_series(job.id)["loss"].y) == [0.5]


def test_a_finished_job_is_read_to_the_end(portal, user, workspace_script, monkeypatch):
    import services.sync

    monkeypatch.setattr(services.sync, "READ_LIMIT", 2000)  # a log far longer than one read
    s = workspace_script("long.py", "for i in range(1, 501):\n    print(f'step={i} loss={1 / i:.5f}')\n")
    job = run_to_end(portal, user, portal.jobs.submit(user, {"name": "long", "script": s}))
    assert job.final_metrics["loss"] == 1 / 500
    assert len(portal.jobs.metric_series(job.id, max_points=10_000)["loss"].y) == 500


def test_stop_while_the_job_is_still_being_started_is_refused_with_a_sentence(portal, user):
    import pytest

    from services.models import Conflict

    job_id = portal.jobs.submit(user, {"name": "early", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    portal.jobs.mark(job_id, status="Submitting", status_group="Running", backend_ref=None)
    with pytest.raises(Conflict, match="still being started"):
        portal.jobs.stop(user, job_id)


def test_the_admins_failure_patterns_name_the_cause(data_dir, workspace_script):
    from services.auth import local_user
    from services.config import Settings
    from services.portal import build_portal

    p = build_portal(Settings(data_dir=data_dir, backend="local",
                              failure_patterns={r"Dataset shard \d+ missing": "Dataset incomplete: ask the data team"}))
    try:
        user = local_user(p.settings)
        script = "shard.py"
        (p.settings.workspace_dir / script).write_text("import sys\nprint('Dataset shard 7 missing')\nsys.exit(3)\n")
        job = run_to_end(p, user, p.jobs.submit(user, {"name": "shard", "script": script}))
        assert job.reason == "Exited with code 3: Dataset incomplete: ask the data team"
    finally:
        p.close()
        from services.reasons import use_admin_patterns

        use_admin_patterns({})


def test_retention_deletes_old_logs_and_keeps_the_job_and_its_charts(portal, user):
    from datetime import timedelta

    from streamlit.testing.v1 import AppTest

    from services.store.orm import Job, utcnow
    from tests.test_pages import APP

    job = run_to_end(portal, user, portal.jobs.submit(user, {"name": "old", "script": "train_example.py",
                                                             "epochs": 2, "extra_args": "--seconds-per-epoch 0"}))
    log_file = portal.jobs.log_file(job.id)
    assert log_file.is_file()
    assert portal.jobs.prune_logs(days=30) == 0, "a fresh job keeps its log"
    with portal.jobs.session() as s:
        s.get(Job, job.id).finished_at = utcnow() - timedelta(days=31)
    assert portal.jobs.prune_logs(days=30) == 1 and not log_file.exists()
    assert portal.jobs.prune_logs(days=30) == 0
    assert portal.jobs.get(user, job.id).final_metrics["loss"] > 0
    assert "loss" in portal.jobs.metric_series(job.id)
    portal.settings.log_retention_days = 30
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/job.py")
    at.query_params["id"] = str(job.id)
    at.run()
    assert any("log was deleted 30 days after it ended" in i.value for i in at.info)


def test_a_stale_running_observation_never_reopens_a_finished_job(any_portal):
    """A leader that lost its lease while reading logs may still hold 'Running' for a job the new leader ended."""
    from services.auth import local_user

    portal, user = any_portal, local_user(any_portal.settings)
    job_id = portal.jobs.submit(user, {"name": "done", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    before = run_to_end(portal, user, job_id)
    assert before.status is JobStatus.SUCCEEDED
    portal.sync.apply(job_id, Observation(JobStatus.RUNNING, "1/1 pods running"))
    after = portal.jobs.get(user, job_id)
    assert after.status is JobStatus.SUCCEEDED and after.finished_at == before.finished_at
    assert after.reason == before.reason


def test_a_leader_that_loses_its_lease_while_reading_logs_applies_nothing(portal, user, monkeypatch):
    # Long enough that a tick sees it Running also on a loaded machine (at 0 s it could end before the first tick).
    job_id = portal.jobs.submit(user, {"name": "lease", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 2"})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, job_id).status is JobStatus.RUNNING)[1])
    with portal.jobs.session() as s:
        row = s.get(Job, job_id)
        active = ActiveJob(job_id, dict(row.backend_ref), 8.0)
    # The job has ended; this replica observes it so, but its lease runs out while it reads the last logs.
    wait_until(lambda: portal.jobs.backend.observe([active])[job_id].status is JobStatus.SUCCEEDED)
    real_pull = portal.jobs.backend.pull_logs
    held = {"now": True}

    def pull_then_lose(job):  # the k8s log read that outlasted the lease
        real_pull(job)
        held["now"] = False

    monkeypatch.setattr(portal.jobs.backend, "pull_logs", pull_then_lose)
    monkeypatch.setattr(portal.sync.leadership, "held", lambda: held["now"])
    with pytest.raises(NotLeading):
        portal.sync.tick()
    assert portal.jobs.get(user, job_id).status is JobStatus.RUNNING
