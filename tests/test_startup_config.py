"""Issue 15, defect 8: a value a script prints once before its first step ("lr=0.02 epochs=12 bs=32") is its
configuration. It is shown with the run's parameters (the job page's Config tab, Compare's parameter table), never
as a chart, a final metric, a History sort or the card's loss; a value printed again later is a metric after all,
and so is a result printed once after training, or by a script that shows no step at all."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.metric_state import printed_at_start
from services.metrics import MetricExtractor, ParserState
from tests.conftest import run_to_end
from tests.test_pages import APP

LOGS = Path(__file__).parent / "data" / "framework_logs"
START_UP = b"lr=0.02 epochs=12 bs=32\n"
TRAINING = b"Epoch 1/2\nloss=0.9\nEpoch 2/2\nloss=0.5\ntest_loss=0.45\n"


def extract(data: bytes, chunk: int | None = None, final: bool = True) -> tuple[dict[str, list], ParserState]:
    """Series by name and the state, fed whole or in chunks whose state round-trips through JSON (as between two
    syncs)."""
    ex = MetricExtractor(ParserState())
    points = []
    step = chunk or len(data) or 1
    for i in range(0, max(len(data), 1), step):
        ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
        points += ex.feed(data[i:i + step], float(i), final=final and i + step >= len(data))
    series: dict[str, list] = {}
    for name, x, _epoch, value, _rank in points:
        series.setdefault(name, []).append((x, value))
    return series, ex.state


def config(st: ParserState) -> dict[str, float]:
    return printed_at_start(st.to_json())


def test_a_start_up_line_is_configuration_and_a_result_printed_once_after_training_is_a_metric():
    series, st = extract(START_UP + TRAINING)
    assert set(series) == {"loss", "test_loss"}, "no chart for lr, epochs or bs"
    assert series["test_loss"] == [(0, 0.45)]
    assert set(st.latest) == {"loss", "test_loss"}, "the card and the final metrics see no configuration"
    assert config(st) == {"lr": 0.02, "epochs": 12.0, "bs": 32.0}


@pytest.mark.parametrize("chunk", [1, 7, 23])
def test_the_same_however_the_log_is_cut(chunk):
    whole, st = extract(START_UP + TRAINING)
    cut, st_cut = extract(START_UP + TRAINING, chunk)
    assert cut == whole and config(st_cut) == config(st) and st_cut.latest == st.latest


def test_while_the_job_runs_a_value_seen_once_before_step_one_is_configuration_until_printed_again():
    ex = MetricExtractor()
    assert ex.feed(b"lr=0.1 warmup=100\nEpoch 1/3\n", 0.0) == []
    assert config(ex.state) == {"lr": 0.1, "warmup": 100.0}
    # A schedule printed every epoch: its first value was a point after all, at the x it had.
    points = ex.feed(b"lr=0.05\n", 1.0)
    assert [(n, x, v) for n, x, _e, v, _r in points] == [("lr", 0, 0.1), ("lr", 1, 0.05)]
    assert config(ex.state) == {"warmup": 100.0} and ex.state.latest["lr"] == 0.05


def test_an_evaluation_before_training_is_a_metric_when_training_shows_it_again_or_it_has_a_step():
    # Step 0 is a step: "step=0 val_loss=2.3" is a point.
    series, st = extract(b"lr=0.02\nstep=0 val_loss=2.3\nstep=10 loss=0.9\n")
    assert series == {"val_loss": [(0, 2.3)], "loss": [(10, 0.9)]} and config(st) == {"lr": 0.02}
    # A baseline evaluation with no marker, evaluated again each epoch: one curve from the baseline on.
    series, st = extract(b"val_loss=2.3\nEpoch 1/2\nval_loss=1.1\nEpoch 2/2\nval_loss=0.7\n")
    assert [v for _x, v in series["val_loss"]] == [2.3, 1.1, 0.7] and config(st) == {}


def test_a_loop_without_step_markers_and_an_evaluation_script_keep_their_metrics():
    series, st = extract(b"lr=0.02\nloss=0.9\nloss=0.7\nloss=0.6\naccuracy=0.8\n")
    assert series["loss"] == [(0, 0.9), (1, 0.7), (2, 0.6)], "a value that changes is the training loop"
    assert series["accuracy"] == [(0, 0.8)] and config(st) == {"lr": 0.02}
    # A script that shows no step at all prints its results: nothing there is configuration.
    series, st = extract(b"accuracy=0.91 f1=0.88\n")
    assert series == {"accuracy": [(0, 0.91)], "f1": [(0, 0.88)]} and config(st) == {}
    assert st.latest == {"accuracy": 0.91, "f1": 0.88}


def test_the_protocol_says_what_a_metric_is():
    series, st = extract(b'##portal {"lr": 0.02}\nEpoch 1/1\nloss=0.5\n')
    assert series["lr"] == [(0, 0.02)] and config(st) == {}


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return {k: repr(v) for k, v in a.items()} == {k: repr(v) for k, v in b.items()}  # NaN equals NaN here


SEED_LINE = b"seed=7 warmup=100 bs=32\n"  # names no recording prints


@pytest.mark.parametrize("name", sorted(p.name for p in LOGS.glob("*.log")))
def test_real_recordings_lose_no_metric_and_gain_their_start_up_line_as_configuration(name):
    data = (LOGS / name).read_bytes()
    series, st = extract(data)
    assert config(st) == {}, "every value of a real run stays a metric"
    with_config, st2 = extract(SEED_LINE + data)
    if st.started:  # a run that shows a step: the start-up line is its configuration, nothing else changes
        assert with_config == series and same(st2.latest, st.latest)
        assert config(st2) == {"seed": 7.0, "warmup": 100.0, "bs": 32.0}
    else:  # nvidia-smi's banner alone: no step, so what it printed are results
        assert with_config == series | {"seed": [(0, 7.0)], "warmup": [(0, 100.0)], "bs": [(0, 32.0)]}


def test_a_name_a_recording_prints_at_every_step_is_a_curve_from_its_first_value():
    """Lightning's 'lr' on every bar redraw: the start-up 'lr=0.02' was its first point, not configuration."""
    series, st = extract(START_UP + (LOGS / "lightning_steps.log").read_bytes())
    assert series["lr"][:2] == [(0, 0.02), (1, 0.05)] and config(st) == {"epochs": 12.0, "bs": 32.0}


def test_random_chunking_of_a_real_recording_with_a_start_up_line():
    data = START_UP + (LOGS / "tqdm_plain.log").read_bytes()
    whole, st = extract(data)
    rng = random.Random(15)
    ex, points, i = MetricExtractor(), [], 0
    while i < len(data):
        n = rng.randint(1, 400)
        ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
        points += ex.feed(data[i:i + n], float(i), final=i + n >= len(data))
        i += n
    cut: dict[str, list] = {}
    for name, x, _epoch, value, _rank in points:
        cut.setdefault(name, []).append((x, value))
    assert cut == whole and config(ex.state) == config(st) == {"lr": 0.02, "epochs": 12.0, "bs": 32.0}


SCRIPT = ("import time\nprint('lr=0.02 epochs=12 bs=32', flush=True)\n"
          "for e in range(1, 4):\n    print(f'Epoch {e}/3', flush=True)\n    print(f'Loss: {1 / e:.4f}', flush=True)\n"
          "print('test_loss=0.31')\n")


def finished(portal, user, workspace_script, name: str, body: str = SCRIPT) -> int:
    job_id = portal.jobs.submit(user, {"name": name, "script": workspace_script(f"{name}.py", body)})
    run_to_end(portal, user, job_id)
    return job_id


def test_a_finished_run_shows_its_start_up_values_with_its_parameters_not_as_metrics(portal, user, workspace_script):
    job_id = finished(portal, user, workspace_script, "printed")
    job = portal.jobs.get(user, job_id)
    assert job.final_metrics == {"loss": pytest.approx(0.3333), "test_loss": 0.31}
    assert set(portal.jobs.metric_series(job_id)) == {"loss", "test_loss"}
    assert portal.jobs.metric_names(job_id) == ["loss", "test_loss"]
    sorts = portal.history.final_metric_names(user)
    assert "lr" not in sorts and "bs" not in sorts and "test_loss" in sorts
    assert portal.jobs.printed_at_start([job]) == {job_id: {"lr": 0.02, "epochs": 12.0, "bs": 32.0}}

    at = AppTest.from_file(APP, default_timeout=30).run()
    at.query_params["id"] = str(job_id)
    at.query_params["tab"] = "Config"
    at.switch_page("pages/job.py").run()
    assert not at.exception
    assert any(m.value == "**Printed at start:** lr 0.02, epochs 12, bs 32" for m in at.markdown)
    at.query_params["tab"] = "Metrics"
    at.run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles == ["loss", "test_loss"], "no chart of lr, epochs or bs"


def test_compare_lists_what_each_run_printed_at_start_among_the_parameters(portal, user, workspace_script):
    a = finished(portal, user, workspace_script, "cmp-a")
    b = finished(portal, user, workspace_script, "cmp-b", SCRIPT.replace("lr=0.02", "lr=0.05"))
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/compare.py")
    at.query_params["ids"] = f"{a},{b}"
    at.run()
    assert not at.exception
    params = next(f.value for f in at.dataframe if "learning_rate" in list(f.value.index))
    assert list(params.loc["lr (printed at start)"]) == ["0.02", "0.05"]
    assert list(params.loc["bs (printed at start)"]) == ["32", "32"]
    final = next(f.value for f in at.dataframe if "test_loss" in list(f.value.index))
    assert "lr" not in list(final.index)


def test_an_evaluation_script_read_while_it_ran_keeps_its_results_once_it_ends(portal, user, workspace_script):
    from services.models import JobStatus
    from tests.conftest import wait_until

    body = "import time\nprint('accuracy=0.91 f1=0.88', flush=True)\ntime.sleep(1.5)\n"
    job_id = portal.jobs.submit(user, {"name": "eval-only", "script": workspace_script("eval_only.py", body)})
    # Read while it runs: no step yet, so the values wait (they might be configuration)...
    wait_until(lambda: (portal.sync.tick(), portal.jobs.printed_at_start([portal.jobs.get(user, job_id)])
                        .get(job_id))[1])
    assert portal.jobs.get(user, job_id).status is JobStatus.RUNNING
    # ...and at the log's end, with no step ever shown, they are the run's results.
    job = run_to_end(portal, user, job_id)
    assert job.final_metrics == {"accuracy": 0.91, "f1": 0.88}
    assert portal.jobs.printed_at_start([job]) == {job_id: {}}
    assert set(portal.jobs.metric_series(job_id)) == {"accuracy", "f1"}
