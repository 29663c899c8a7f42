"""Issue 15's charts as daily users expect them: smoothing with the raw line faint, a log scale, a quantity's training
and validation series on one chart, on the job page and on Compare, where each run keeps one distinct colour."""

from __future__ import annotations

import base64
import colorsys
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from services.downsample import lttb
from services.job_charts import LIVE_SERIES_POINTS, MAX_CHART_POINTS
from services.metric_groups import MetricGroup, group_metrics, role_of
from services.models import JobStatus
from services.parallel_coords import parallel_axes
from services.smoothing import DEFAULT_SMOOTHING, bucket_means, ema, log_scale_problem
from services.store.orm import Job, MetricPoint
from services.store.seed import seed_jobs

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


# The pure pieces -------------------------------------------------------------------------------------------------
def test_ema_is_tensorboards_debiased_average():
    # By hand, weight 0.5: 0.5 * 1 / (1 - 0.5) = 1; (0.25 + 0.5 * 3) / (1 - 0.25) = 7/3; (0.875 + 0.5 * 2) / 0.875.
    assert ema(np.array([1.0, 3.0, 2.0]), 0.5) == pytest.approx([1.0, 7 / 3, 1.875 / 0.875])
    assert ema(np.array([1.0, 3.0]), 0.0).tolist() == [1.0, 3.0], "0 is off"
    assert ema(np.full(5, 0.3), 0.9).tolist() == [0.3] * 5, "a constant stays exactly constant"


def test_ema_keeps_nan_and_inf_in_place_and_skips_them():
    out = ema(np.array([1.0, np.nan, 3.0, np.inf, 2.0]), 0.5)
    assert np.isnan(out[1]) and np.isinf(out[3])
    assert [out[0], out[2], out[4]] == pytest.approx([1.0, 7 / 3, 1.875 / 0.875]), "as if they were not there"
    assert np.isnan(ema(np.array([np.nan, np.nan]), 0.6)).all()
    with pytest.raises(ValueError, match="from 0 to below 1"):
        ema(np.array([1.0]), 1.0)


def test_bucket_means_are_lttbs_buckets_means():
    # lttb keeps point 0, one point of each of the buckets [1, 5) and [5, 9), and point 9.
    y = np.arange(10, dtype=np.float64)
    assert bucket_means(y, 4).tolist() == [0.0, 2.5, 6.5, 9.0]
    assert len(lttb(y, y, 4)[0]) == 4
    assert bucket_means(y, 20) is None, "not downsampled: the points are smoothed themselves"
    y[2] = np.nan
    assert bucket_means(y, 4)[1] == pytest.approx((1 + 3 + 4) / 3), "a NaN is left out of its bucket's mean"


def test_smoothing_the_buckets_means_is_faithful_to_the_raw_points_and_the_kept_points_are_not():
    """bench/smoothing_downsampled.py's finding: a noisy 100,000-step loss, 2,000 points shown."""
    rng = np.random.default_rng(1)
    x = np.arange(100_000, dtype=np.float64)
    y = 2 * np.exp(-x / 20_000) + rng.normal(0, 0.3, len(x))
    dx, dy = lttb(x, y, MAX_CHART_POINTS)
    raw = ema(y, DEFAULT_SMOOTHING ** (MAX_CHART_POINTS / len(x)))[dx.astype(int)]  # the same span, in raw steps
    off = {name: float(np.sqrt(np.mean((ema(v, DEFAULT_SMOOTHING) - raw) ** 2))) / 0.3
           for name, v in (("means", bucket_means(y, MAX_CHART_POINTS)), ("kept", dy))}
    assert off["means"] < 0.1, off
    assert off["kept"] > 0.5, off


@pytest.mark.parametrize(("names", "groups"), [
    (["loss", "val_loss"], [MetricGroup("loss", {"train": "loss", "validation": "val_loss"})]),
    (["train_loss", "validation_loss"],
     [MetricGroup("loss", {"train": "train_loss", "validation": "validation_loss"})]),
    (["acc", "val_acc"], [MetricGroup("acc", {"train": "acc", "validation": "val_acc"})]),
    (["accuracy", "eval_accuracy"], [MetricGroup("accuracy", {"train": "accuracy", "validation": "eval_accuracy"})]),
    (["train/loss", "val/loss"], [MetricGroup("loss", {"train": "train/loss", "validation": "val/loss"})]),
    (["loss_train", "loss_val"], [MetricGroup("loss", {"train": "loss_train", "validation": "loss_val"})]),
    # Hugging Face: per-step loss, the run's average train_loss, eval_loss.
    (["eval_loss", "loss", "train_loss"],
     [MetricGroup("loss", {"train · loss": "loss", "train · train_loss": "train_loss", "validation": "eval_loss"})]),
    # Only one role: each keeps its chart, named as logged.
    (["eval_runtime", "lr"], [MetricGroup("eval_runtime", {"eval_runtime": "eval_runtime"}),
                              MetricGroup("lr", {"lr": "lr"})]),
    (["interval", "val"], [MetricGroup("interval", {"interval": "interval"}), MetricGroup("val", {"val": "val"})]),
])
def test_a_quantitys_train_and_validation_series_share_a_chart(names, groups):
    assert group_metrics(dict.fromkeys(names, "step")) == groups


def test_series_on_different_axes_keep_their_own_charts():
    assert group_metrics({"loss": "step", "val_loss": "epoch"}) == [MetricGroup("loss", {"loss": "loss"}),
                                                                     MetricGroup("val_loss", {"val_loss": "val_loss"})]
    # A plain `loss` on another axis than train_/val_loss: no two charts with one title.
    titles = [g.title for g in group_metrics({"loss": "epoch", "train_loss": "step", "val_loss": "step"})]
    assert titles == ["loss", "train_loss / val_loss"]
    assert role_of("Val_Loss") == ("Loss", "validation")


def test_log_scale_problem_is_a_sentence_about_values_at_or_below_zero():
    assert log_scale_problem([np.array([0.5, np.nan, 2.0])]) is None
    assert "needs values above 0" in log_scale_problem([np.array([0.5]), np.array([-0.25, 1.0])])
    assert "-0.25" in log_scale_problem([np.array([0.5]), np.array([-0.25, 1.0])])


# The pages -------------------------------------------------------------------------------------------------------
def values(array) -> list[float]:
    """A Plotly array, which Plotly may ship as typed binary data."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return array


def noisy(n: int, seed: int, level: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * np.exp(-np.arange(n) / (n / 3)) + rng.uniform(0, 0.2, n)


def seeded_job(portal, user, metrics: dict[str, np.ndarray]) -> int:
    """A finished job of the user that logged these series, one value per step."""
    seed_jobs(portal.jobs.sessions.kw["bind"], 1, owner=user.name, status=JobStatus.SUCCEEDED,
              seed=len(portal.jobs.list_jobs()))
    job_id = max(j.id for j in portal.jobs.list_jobs())
    with portal.jobs.session() as s:
        s.execute(insert(MetricPoint), [{"job_id": job_id, "name": name, "step": step, "epoch": None,
                                         "value": float(v), "ts": float(step), "rank": None}
                                        for name, ys in metrics.items() for step, v in enumerate(ys)])
    last = {name: float(ys[-1]) for name, ys in metrics.items()}
    portal.jobs.mark(job_id, latest_metrics=last, final_metrics=last)
    return job_id


def open_page(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page(page)
    at.query_params.update(params)
    at.run()
    assert not at.exception
    return at


def figures(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"].get("title", {}).get("text", ""): s for s in specs}


def test_smoothing_draws_the_average_over_a_faint_raw_line_and_the_slider_turns_it_off(portal, user):
    loss, val = noisy(200, 1), noisy(200, 2, 1.2)
    job_id = seeded_job(portal, user, {"loss": loss, "val_loss": val})
    at = open_page("pages/job.py", id=str(job_id), tab="Metrics")
    slider = at.slider(key="chart_smoothing")
    assert slider.value == pytest.approx(DEFAULT_SMOOTHING), "a noisy series opens smoothed"
    traces = {t["name"]: t for t in figures(at)["loss"]["data"]}
    assert list(traces) == ["train (raw)", "train", "validation (raw)", "validation"]
    for role, raw in (("train", loss), ("validation", val)):
        assert traces[f"{role} (raw)"]["opacity"] < 0.5 and not traces[f"{role} (raw)"]["showlegend"]
        assert values(traces[f"{role} (raw)"]["y"]) == pytest.approx(raw.tolist())
        assert values(traces[role]["y"]) == pytest.approx(ema(raw, DEFAULT_SMOOTHING).tolist())
        assert "opacity" not in traces[role], "the smoothed line is drawn in full"
        assert traces[role]["line"]["color"] == traces[f"{role} (raw)"]["line"]["color"], "one colour per line"
    assert traces["train"]["line"]["color"] != traces["validation"]["line"]["color"]

    slider.set_value(0.9).run()
    traces = {t["name"]: t for t in figures(at)["loss"]["data"]}
    assert values(traces["train"]["y"]) == pytest.approx(ema(loss, 0.9).tolist())
    slider.set_value(0.0).run()
    traces = figures(at)["loss"]["data"]
    assert [t["name"] for t in traces] == ["train", "validation"] and "opacity" not in traces[0]
    assert values(traces[0]["y"]) == pytest.approx(loss.tolist()), "0 is the raw line only"


def test_a_few_points_per_epoch_open_unsmoothed(portal, user):
    job_id = seeded_job(portal, user, {"loss": np.array([0.9, 0.5, 0.4])})
    at = open_page("pages/job.py", id=str(job_id), tab="Metrics")
    assert at.slider(key="chart_smoothing").value == 0.0
    assert [t["name"] for t in figures(at)["loss"]["data"]] == ["loss"]


def test_a_big_series_is_smoothed_over_its_buckets_means_which_the_sync_loops_refresh_keeps(portal, user):
    """Past LIVE_SERIES_POINTS a view reads no point: the means come from the chart cache, with the series."""
    loss = noisy(LIVE_SERIES_POINTS + 5_000, 3)
    job_id = seeded_job(portal, user, {"loss": loss})
    portal.jobs.refresh_series(min_age_seconds=0, limit=10)
    at = open_page("pages/job.py", id=str(job_id), tab="Metrics")
    traces = {t["name"]: t for t in figures(at)["loss"]["data"]}
    x = np.arange(len(loss), dtype=np.float64)
    assert values(traces["loss (raw)"]["y"]) == pytest.approx(lttb(x, loss, MAX_CHART_POINTS)[1].tolist())
    assert values(traces["loss"]["y"]) == pytest.approx(ema(bucket_means(loss, MAX_CHART_POINTS),
                                                            DEFAULT_SMOOTHING).tolist())


def test_log_scale_and_a_sentence_where_values_are_not_above_zero(portal, user):
    job_id = seeded_job(portal, user, {"loss": np.array([1.0, 0.1, 0.01]), "delta": np.array([0.5, -0.2, 0.1])})
    at = open_page("pages/job.py", id=str(job_id), tab="Metrics")
    assert figures(at)["loss"]["layout"].get("yaxis", {}).get("type") != "log"
    at.toggle(key="chart_log").set_value(True).run()
    charts = figures(at)
    assert charts["loss"]["layout"]["yaxis"]["type"] == "log"
    assert charts["delta"]["layout"].get("yaxis", {}).get("type") != "log", "no broken chart"
    assert any("log scale needs values above 0" in c.value and "-0.2" in c.value for c in at.caption)


def test_a_multi_rank_job_keeps_a_line_per_rank_with_the_options(portal, user):
    from tests.test_rank_charts import RANK0, RANK1, run_recorded_log

    job_id = run_recorded_log(portal, user)
    at = open_page("pages/job.py", id=str(job_id), tab="Metrics")
    at.slider(key="chart_smoothing").set_value(0.5).run()
    traces = figures(at)["loss"]["data"]
    assert [t["name"] for t in traces] == ["rank 0 (raw)", "rank 0", "rank 1 (raw)", "rank 1"]
    assert values(traces[3]["y"]) == pytest.approx(ema(np.array(RANK1), 0.5).tolist())
    assert values(traces[0]["y"]) == RANK0


def test_compare_gives_each_run_one_distinct_colour_on_every_chart_and_legends_below_the_axis_title(portal, user):
    runs = [seeded_job(portal, user, {"loss": noisy(120, i), "val_loss": noisy(120, 10 + i), "acc": noisy(120, 20 + i)})
            for i in range(3)]
    with portal.jobs.session() as s:  # one parameter differs, for the parallel coordinates
        request = s.get(Job, runs[0]).request
        for i, job_id in enumerate(runs):
            job = s.get(Job, job_id)
            job.request = {**request, "learning_rate": 0.001 * 10 ** i}
            job.final_metrics = {"loss": 0.1 * (i + 1)}
    at = open_page("pages/compare.py", ids=",".join(map(str, runs)))
    jobs = {j.id: j for j in portal.jobs.list_jobs()}
    charts = figures(at)
    assert set(charts) >= {"loss", "acc"}
    colour_of: dict[str, set[str]] = {}
    for title in ("loss", "acc"):
        for trace in charts[title]["data"]:
            if trace["x"] != [None]:  # not the legend's key of the dashes
                colour_of.setdefault(trace["legendgroup"], set()).add(trace["line"]["color"])
        legend, layout = charts[title]["layout"]["legend"], charts[title]["layout"]
        # Laid out from the figure's foot, inside a bottom margin that also holds the ticks and the axis title.
        assert legend["orientation"] == "h" and legend["yref"] == "container" and legend["y"] == 0
        assert layout["margin"]["b"] >= 55 + 20
    assert sorted(colour_of) == sorted(f"{jobs[i].name} #{i}" for i in runs)
    assert all(len(c) == 1 for c in colour_of.values()), f"a run changes colour between charts: {colour_of}"
    colours = [next(iter(c)) for c in colour_of.values()]
    assert len(set(colours)) == 3
    assert min(hue_gap(a, b) for a in colours for b in colours if a != b) >= 25, "near-equal colours"
    # The legend: each run once, then what the dashes mean; hover names each line in full.
    loss = charts["loss"]["data"]
    assert [t["name"] for t in loss if t.get("showlegend", True)] == [
        *(f"{jobs[i].name} #{i}" for i in runs), "train", "validation"]
    drawn = [t for t in loss if "(raw)" not in t["name"] and t["x"] != [None]]
    assert [(t["hovertemplate"].split("<extra>")[1], t["line"]["dash"]) for t in drawn] == [
        (f"{jobs[i].name} #{i} · {role}</extra>", dash) for i in runs for role, dash in (("train", "solid"),
                                                                                        ("validation", "dash"))]
    # Parallel coordinates (lines, not Plotly's WebGL Parcoords, which the portal's CSP stops): a run a line, in its
    # colour, over an axis per parameter that differs (short titles) and the result.
    parallel = next(s for s in charts.values() if s["layout"].get("shapes"))
    assert {t["name"]: t["line"]["color"] for t in parallel["data"]} == {
        run: next(iter(c)) for run, c in colour_of.items()}
    titles = [a["text"] for a in parallel["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert titles == ["<b>lr</b>", "<b>loss</b>"]
    first = next(t for t in parallel["data"] if t["name"] == f"{jobs[runs[0]].name} #{runs[0]}")
    assert values(first["y"]) == [0.0, 0.0], "the lowest lr (log axis: 0.001 to 0.1) and the lowest loss"
    second = next(t for t in parallel["data"] if t["name"].endswith(f"#{runs[1]}"))
    assert values(second["y"]) == pytest.approx([0.5, 0.5])


def hue_gap(a: str, b: str) -> float:
    """How far apart two colours' hues are, in degrees (Streamlit's first two chart blues: 3)."""
    ha, hb = (colorsys.rgb_to_hsv(*(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)))[0] * 360 for c in (a, b))
    return min(abs(ha - hb), 360 - abs(ha - hb))


def test_parallel_axes_run_from_lowest_to_highest_in_powers_of_ten_for_learning_rates():
    lr, batch, same, missing = parallel_axes({"lr": [0.1, 0.001, 0.01], "batch": [32, 16, 64], "epochs": [3, 3, 3],
                                              "loss": [0.2, None, 0.4]})
    assert lr.log and lr.scaled == pytest.approx([1.0, 0.0, 0.5]) and (lr.low, lr.high) == ("0.001", "0.1")
    assert not batch.log and batch.scaled == pytest.approx([1 / 3, 0.0, 1.0])
    assert same.scaled == [0.5, 0.5, 0.5], "one value for all: the middle"
    assert missing.scaled[0] == 0.0 and math.isnan(missing.scaled[1]) and missing.scaled[2] == 1.0


def test_a_final_metric_named_like_a_parameter_gets_its_own_parallel_axis(portal, user):
    """A script that logs its learning rate as "lr": picked as the result, it is an axis beside the parameter's
    "lr" axis, not drawn over it (the parameter's axis would be gone)."""
    runs = [seeded_job(portal, user, {"loss": noisy(60, i), "lr": noisy(60, 5 + i)}) for i in range(2)]
    with portal.jobs.session() as s:
        request = s.get(Job, runs[0]).request
        for i, job_id in enumerate(runs):
            job = s.get(Job, job_id)
            job.request = {**request, "learning_rate": 0.001 * 10 ** i}
            job.final_metrics = {"loss": 0.1 * (i + 1), "lr": 0.5 + i}
    at = open_page("pages/compare.py", ids=",".join(map(str, runs)))
    at.selectbox(key="cmp_target").select("lr").run()
    assert not at.exception
    parallel = next(s for s in figures(at).values() if s["layout"].get("shapes"))
    titles = [a["text"] for a in parallel["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert titles == ["<b>lr</b>", "<b>lr (final)</b>"]
