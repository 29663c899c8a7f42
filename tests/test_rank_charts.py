"""A torchrun job's ranks on the job page: its recorded log (tests/data/framework_logs/torchrun_2ranks.log) is what
the job prints, the real sync loop stores its points, and the services and the Metrics tab show one line per rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import run_to_end

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
LOG = Path(__file__).parent / "data" / "framework_logs" / "torchrun_2ranks.log"
# Each rank's loss as the log prints it: "step 5/10 loss=…", "step 10/10 loss=…", then the epoch's "Epoch 1/3 loss=…"
# (at the step the rank stands at), three epochs of ten steps.
STEPS = [5, 10, 10, 15, 20, 20, 25, 30, 30]
RANK0 = [1.5137, 0.9421, 3.6682, 0.7841, 0.9041, 0.8996, 0.3503, 0.7261, 0.5738]
RANK1 = [16.3555, 5.3363, 17.4654, 6.1928, 1.4143, 4.0421, 2.0341, 2.4993, 2.3579]


def run_recorded_log(portal, user) -> int:
    """A finished job whose output is the recorded torchrun log, read by the sync loop like any job's."""
    (portal.settings.workspace_dir / "torchrun_replay.py").write_text(
        f"import sys\nsys.stdout.buffer.write({LOG.read_bytes()!r})\nsys.stdout.flush()\n")
    job_id = portal.jobs.submit(user, {"name": "ddp", "script": "torchrun_replay.py", "epochs": 3})
    run_to_end(portal, user, job_id)
    portal.jobs.refresh_series(min_age_seconds=0, limit=100)
    return job_id


@pytest.fixture
def torchrun_job(portal, user) -> int:
    return run_recorded_log(portal, user)


def test_both_ranks_epoch_losses_sit_at_their_own_steps(portal, torchrun_job):
    assert portal.jobs.metric_ranks(torchrun_job) == [0, 1]
    loss = portal.jobs.rank_series(torchrun_job, [0, 1])["loss"]
    assert sorted(loss) == [0, 1]
    for rank, expected in ((0, RANK0), (1, RANK1)):
        assert loss[rank].axis == "step"
        assert loss[rank].x.tolist() == STEPS, f"rank {rank} at its own steps"
        assert loss[rank].y.tolist() == expected, f"rank {rank}'s own figures"
    # The filter: one rank asked for, only that rank's line.
    assert list(portal.jobs.rank_series(torchrun_job, [1])["loss"]) == [1]
    assert portal.jobs.rank_series(torchrun_job, []) == {}


def loss_traces(at: AppTest) -> list[dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    loss = [s for s in specs if s["layout"].get("title", {}).get("text") == "loss"]
    assert len(loss) == 1, "one loss chart, whatever the number of ranks"
    return loss[0]["data"]


def ys(trace: dict) -> list[float]:
    y = trace["y"]
    if isinstance(y, dict):  # Plotly ships arrays as typed binary data
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
    return y


def test_the_metrics_tab_draws_a_line_per_rank_and_the_filter_keeps_the_chosen_one(portal, torchrun_job):
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/job.py")
    at.query_params.update({"id": str(torchrun_job), "tab": "Metrics"})
    at.run()
    assert not at.exception
    traces = loss_traces(at)
    assert [t["name"] for t in traces] == ["rank 0", "rank 1"]
    assert [ys(t) for t in traces] == [RANK0, RANK1]
    at.multiselect(key="chart_ranks").set_value([1]).run()
    assert not at.exception
    traces = loss_traces(at)
    assert [t["name"] for t in traces] == ["rank 1"] and ys(traces[0]) == RANK1
    at.multiselect(key="chart_ranks").set_value([]).run()
    assert not at.get("plotly_chart") and any("Pick a rank" in i.value for i in at.info)


def test_a_view_of_the_ranks_reads_the_chart_cache_not_their_points(portal, torchrun_job):
    """At 8 ranks x 200,000 points a view that read the points took 8.6 s (bench/chart_downsampling.py --ranks)."""
    from sqlalchemy import event

    engine = portal.jobs.sessions.kw["bind"]
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        loss = portal.jobs.rank_series(torchrun_job, [0, 1])["loss"]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert loss[1].y.tolist() == RANK1
    assert not [q for q in statements if "metric_points" in q], statements


def test_new_points_of_a_rank_reach_its_line_after_the_sync_loops_refresh(portal, torchrun_job):
    from sqlalchemy import insert, update

    from services.store.orm import MetricPoint, SeriesCache

    assert portal.jobs.rank_series(torchrun_job, [1])["loss"][1].y.tolist() == RANK1  # cached now
    with portal.jobs.session() as s:  # what the sync loop writes when rank 1 logs another loss
        s.execute(insert(MetricPoint), [{"job_id": torchrun_job, "name": "loss", "step": 35, "epoch": None,
                                         "value": 1.25, "ts": 0.0, "rank": 1}])
        s.execute(update(SeriesCache).where(SeriesCache.job_id == torchrun_job, SeriesCache.name == "loss")
                  .values(dirty=True, updated_at=0.0))
    portal.jobs.refresh_series(min_age_seconds=0)
    loss = portal.jobs.rank_series(torchrun_job, [0, 1])["loss"]
    assert loss[1].x.tolist() == [*STEPS, 35] and loss[1].y.tolist() == [*RANK1, 1.25]
    assert loss[0].y.tolist() == RANK0, "the other rank's line is unchanged"


def test_rank_lines_come_from_the_chart_cache_on_sqlite_and_postgresql(any_portal):
    from services.auth import local_user

    job_id = run_recorded_log(any_portal, local_user(any_portal.settings))
    loss = any_portal.jobs.rank_series(job_id, [0, 1])["loss"]
    assert loss[0].y.tolist() == RANK0 and loss[1].y.tolist() == RANK1 and loss[1].x.tolist() == STEPS
    assert set(any_portal.jobs.metric_series(job_id)) == {"loss"}, "a rank's cache entry is no series of its own"
