"""Issue 21, TensorBoard: a script that logs only to TensorBoard (its own event-file writer, a real job) gets its
curves on the job page; the event files are read from where the last pass stopped; the TensorBoard service starts
one process per set of jobs, reuses it, stops it when idle and keeps at most the configured number running."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from services.models import NotFound, User
from services.store.orm import MetricPoint
from services.tb_scalars import EventScalarScanner, records
from services.tensorboard import TensorBoardError
from tests.conftest import run_to_end
from tests.tb_writer import tb_script

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
STEPS = 20


def scanner_of(portal) -> EventScalarScanner:
    (scanner,) = [w for w in portal.sync.workers if isinstance(w, EventScalarScanner)]
    return scanner


def submit_tb_job(portal, user, workspace_script, steps: int = STEPS, pause: float = 0.0) -> int:
    workspace_script("tb_only.py", tb_script(steps, pause))
    return portal.jobs.submit(user, {"name": "tb-only", "script": "tb_only.py", "epochs": 1})


def run_with_scanner(portal, user, job_id: int) -> int:
    """The sync loop and the scanner each pass, as the portal runs them, until the job ended and was read."""
    scanner, passes = scanner_of(portal), 0
    while portal.jobs.get(user, job_id).is_active:
        portal.sync.tick()
        scanner.tick()
        passes += 1
        time.sleep(0.2)
    scanner.tick()  # the pass after it ended: its last records
    return passes


def stored(portal, job_id: int) -> dict[str, list[tuple[int, float]]]:
    with portal.jobs.session() as s:
        rows = s.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
                         .where(MetricPoint.job_id == job_id).order_by(MetricPoint.name, MetricPoint.step)).all()
    out: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in rows:
        out.setdefault(name, []).append((step, value))
    return out


def test_a_script_that_logs_only_to_tensorboard_gets_its_curves_on_the_job_page(portal, user, workspace_script):
    job_id = submit_tb_job(portal, user, workspace_script, pause=0.1)
    passes = run_with_scanner(portal, user, job_id)
    assert passes > 2, "read while it ran, not only at the end"
    points = stored(portal, job_id)
    # Each record once, in order, although the files were read in several passes while they grew.
    assert points["loss"] == [(s * 10, pytest.approx(2.0 / (s + 1))) for s in range(STEPS)]
    assert [s for s, _ in points["accuracy"]] == [s * 10 for s in range(STEPS)]
    portal.jobs.refresh_series()

    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/job.py")
    at.query_params.update({"id": str(job_id), "tab": "Metrics"})
    at.run()
    assert not at.exception
    titles = {json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")}
    assert {"loss", "accuracy"} <= titles, titles
    assert any(b.label == "Open TensorBoard" for b in at.get("link_button")), "its page offers TensorBoard"


def test_another_pass_reads_only_what_was_appended_and_waits_for_a_record_being_written(portal, user,
                                                                                     workspace_script):
    job_id = submit_tb_job(portal, user, workspace_script, steps=5)
    run_to_end(portal, user, job_id)
    scanner = scanner_of(portal)
    assert scanner.scan(job_id) == 10 and scanner.scan(job_id) == 0, "nothing read twice"
    # The script's writer appends one more record in two writes: the first half waits, the whole counts once.
    (path,) = (portal.jobs.backend.output_dir(job_id) / "runs" / "train").glob("events.out.tfevents.*")
    record = path.read_bytes()[-records_length(path):]
    with open(path, "ab") as fh:
        fh.write(record[:7])
    assert scanner.scan(job_id) == 0
    with open(path, "ab") as fh:
        fh.write(record[7:])
    assert scanner.scan(job_id) == 1
    with portal.jobs.session() as s:
        assert s.scalar(select(func.count()).where(MetricPoint.job_id == job_id, MetricPoint.name == "loss")) == 6


def records_length(path: Path) -> int:
    """The length of the file's last record (frame included)."""
    ends = [end for end, _ in records(path.read_bytes())]
    return ends[-1] - ends[-2]


def test_a_link_planted_among_the_event_files_is_not_read(portal, user, workspace_script, tmp_path):
    other = submit_tb_job(portal, user, workspace_script, steps=3)
    run_to_end(portal, user, other)
    mine = portal.jobs.submit(user, {"name": "plain", "script": "train_example.py", "epochs": 1,
                                     "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, mine)
    (target,) = (portal.jobs.backend.output_dir(other) / "runs" / "train").glob("events.out.tfevents.*")
    os.symlink(target, portal.jobs.backend.output_dir(mine) / "events.out.tfevents.stolen")
    assert scanner_of(portal).scan(mine) == 0
    with pytest.raises(TensorBoardError, match="no TensorBoard event files"):
        portal.tensorboards.open(user, [mine])


def test_tensorboard_is_reused_stopped_when_idle_and_kept_to_the_limit(portal, user, workspace_script, monkeypatch):
    monkeypatch.setattr(portal.settings, "tensorboard_max_sessions", 1)
    first = submit_tb_job(portal, user, workspace_script, steps=3)
    second = submit_tb_job(portal, user, workspace_script, steps=3)
    run_to_end(portal, user, first)
    run_to_end(portal, user, second)
    tbs = portal.tensorboards
    try:
        session = tbs.open(user, [first])
        assert tbs.open(user, [first]) is session, "the same set reuses its TensorBoard"
        assert (session.mirror / str(first) / "runs" / "train").is_dir(), "it reads the portal's copy"
        pair = tbs.open(user, [second, first])
        assert pair.key == f"{first}-{second}" and tbs.running() == [pair.key], "one at most: the idle one went"
        assert session.proc.poll() is not None and not session.mirror.exists()
        assert tbs.reap(time.monotonic() + 60) == [], "used a moment ago"
        assert tbs.reap(time.monotonic() + portal.settings.tensorboard_idle_minutes * 60 + 1) == [pair.key]
        assert pair.proc.poll() is not None and tbs.running() == []
    finally:
        tbs.stop_all()


def test_tensorboard_opens_only_for_who_may_read_the_jobs_files(portal, user, workspace_script):
    job_id = submit_tb_job(portal, user, workspace_script, steps=3)
    run_to_end(portal, user, job_id)
    with pytest.raises(NotFound):
        portal.tensorboards.open(User("bob"), [job_id])  # sees it read-only, may not read its files
    with pytest.raises(NotFound):
        portal.tensorboards.open(user, [job_id, job_id + 1])
    assert portal.tensorboards.running() == []


def test_compare_offers_one_tensorboard_for_the_picked_runs(portal, user, workspace_script):
    first = submit_tb_job(portal, user, workspace_script, steps=3)
    second = portal.jobs.submit(user, {"name": "plain", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, first)
    run_to_end(portal, user, second)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/compare.py")
    at.query_params.update({"ids": f"{second},{first}"})
    at.run()
    assert not at.exception
    (button,) = [b for b in at.get("link_button") if b.proto.label == "Open TensorBoard"]
    assert button.proto.url == f"/tensorboard/{first}-{second}/", "one TensorBoard with both runs"


def test_a_tensorboard_only_job_has_its_latest_loss_on_its_card_final_metrics_in_history_and_alerts(
        portal, user, workspace_script):
    portal.notifications.set_alerts(user, metric_rules="loss < 0.5")
    job_id = submit_tb_job(portal, user, workspace_script)
    run_with_scanner(portal, user, job_id)
    job = portal.jobs.get(user, job_id)
    # The last values written (step 190): loss 2/20, accuracy 19/20; the log said only "done".
    assert job.final_metrics == {"loss": pytest.approx(0.1), "accuracy": pytest.approx(0.95)}
    assert job.loss == pytest.approx(0.1)

    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "Final loss 0.1" in " ".join(m.value for m in at.markdown), "the dashboard card's loss"
    at.switch_page("pages/history.py").run()
    assert not at.exception
    table = next(f.value for f in at.dataframe if "final loss" in f.value.columns)
    assert list(table["final loss"]) == [pytest.approx(0.1)]

    (alert,) = [n for n in portal.notifications.notifications(user) if n.event == "metric_threshold"]
    assert alert.job_id == job_id and "loss < 0.5" in alert.sentence
