"""The metric extractor on real output of common training stacks, recorded from real CPU runs
(tests/data/framework_logs/README.md says how): Hugging Face Trainer, PyTorch Lightning, tqdm, torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from services.metrics import MetricExtractor, ParserState
from services.reasons import failure_reason

LOGS = Path(__file__).parent / "data" / "framework_logs"


def extract(name: str, chunk: int | None = None) -> tuple[dict[tuple[str, int | None], list[tuple]], ParserState]:
    """Series by (name, rank) and the final state; optionally fed in chunks, as the sync loop reads a live log."""
    data = (LOGS / name).read_bytes()
    ex = MetricExtractor(ParserState())
    points = []
    if chunk is None:
        points = ex.feed(data, 0.0, final=True)
    else:
        for i in range(0, len(data), chunk):  # the state round-trips through JSON, as between two syncs
            ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
            points += ex.feed(data[i:i + chunk], float(i), final=i + chunk >= len(data))
    series: dict[tuple[str, int | None], list[tuple]] = {}
    for n, x, ep, v, r in points:
        series.setdefault((n, r), []).append((x, ep, v))
    return series, ex.state


def values(series, name, rank=None):
    return [v for _x, _ep, v in series[(name, rank)]]


def test_hugging_face_trainer_dicts_eval_and_summary():
    series, st = extract("hf_trainer.log")
    loss = series[("loss", None)]
    assert len(loss) == 12 and loss[0][2] == 0.6925 and loss[-1][2] == 0.6765
    assert [x for x, _ep, _v in loss] == sorted(x for x, _ep, _v in loss), "x is the Trainer's global step"
    assert values(series, "eval_loss") == [0.6917, 0.6896, 0.6881]
    assert [ep for _x, ep, _v in series[("eval_loss", None)]] == [1.0, 2.0, 3.0]
    assert values(series, "train_loss") == [0.6864]
    assert (st.step, st.total_steps) == (60, 60) and st.progress(3) == 1.0
    assert st.latest["learning_rate"] == 8.333e-06 and st.latest["grad_norm"] == 0.4933


def test_hugging_face_trainer_progress_mid_run_comes_from_its_bar():
    data = (LOGS / "hf_trainer.log").read_bytes()
    half = data[: data.index(b"{'eval_loss'")]  # the log as it stood at the first evaluation
    ex = MetricExtractor(ParserState())
    ex.feed(half, 0.0, final=True)
    assert ex.state.total_steps == 60 and 0.3 <= ex.state.progress(3) <= 0.34


def test_hugging_face_trainer_tqdm_only_still_gives_progress_and_the_summary():
    series, st = extract("hf_trainer_tqdm_only.log")
    assert values(series, "train_loss") == [0.6864] and st.progress(3) == 1.0


def test_lightning_progress_bar_metrics_once_per_change_epochs_from_zero():
    series, st = extract("lightning.log")
    train = values(series, "train_loss")
    assert train[:3] == [2.23, 4.77, 2.73], "each new value once, not once per bar redraw"
    assert len(train) < 100 and train[-1] == 0.0409
    assert values(series, "val_loss")[-1] == 0.0625
    assert not {k for k, _r in series} & {"v_num", "total_params", "trainable_params"}
    assert st.epoch_base == 0 and st.epoch == 4 and st.progress(4) == 1.0


def test_lightning_rich_bar_final_render():
    series, _st = extract("lightning_rich.log")
    assert values(series, "train_loss") == [0.041] and values(series, "val_loss") == [0.063]


def test_tqdm_bars_with_carriage_returns_and_epoch_summaries():
    series, st = extract("tqdm_plain.log")
    assert values(series, "acc") == [0.5737, 0.7688, 0.8875]
    loss = values(series, "loss")
    assert loss[0] == 1.2 and loss[-1] == 0.5224 and len(loss) < 117
    assert (st.epoch, st.total_epochs) == (3, 3) and st.progress(3) == 1.0


def test_tqdm_progress_mid_epoch_is_a_fraction_of_the_run():
    data = (LOGS / "tqdm_plain.log").read_bytes()
    ex = MetricExtractor(ParserState())
    ex.feed(data[: data.index(b"Epoch 2:  48%")], 0.0, final=True)
    assert 1.3 / 3 < ex.state.progress(3) < 1.5 / 3


def test_torchrun_keeps_metrics_per_rank():
    series, st = extract("torchrun_2ranks.log")
    rank0, rank1 = values(series, "loss", 0), values(series, "loss", 1)
    assert rank0[-1] == 0.5738 and rank1[-1] == 2.3579
    assert 1.5137 in rank0 and 16.3555 in rank1 and 16.3555 not in rank0
    assert (st.epoch, st.total_epochs) == (3, 3), "progress follows the first rank"


@pytest.mark.parametrize("name", ["hf_trainer.log", "lightning.log", "tqdm_plain.log", "torchrun_2ranks.log"])
def test_chunked_reading_gives_the_same_series(name):
    whole, st = extract(name)
    chunked, st2 = extract(name, chunk=997)
    for key in whole:
        assert values(chunked, *key)[-1] == values(whole, *key)[-1], key
    assert st2.progress(3) == st.progress(3)


def tail(name: str) -> str:
    return "\n".join((LOGS / name).read_text(errors="replace").splitlines()[-60:])


def test_real_failures_show_their_cause():
    assert failure_reason(1, None, tail("traceback_failure.log")) == (
        "Exited with code 1: RuntimeError: addmm: mat1 and mat2 shapes cannot be multiplied (16x12 and 10x32)")
    anomaly = failure_reason(1, None, tail("nan_loss_anomaly.log"))
    assert anomaly.startswith("Exited with code 1: Loss became") and "AddmmBackward0" in anomaly
    torchrun = failure_reason(1, None, tail("torchrun_failure.log"))
    assert "IndexError: index 42 is out of bounds" in torchrun or "ChildFailedError" in torchrun, torchrun


def test_keys_that_meet_on_one_number_are_still_told_apart(monkeypatch):
    """Keys are grouped by a number mixed from their bytes; with a mixer that sends every short key to the same
    number, the extractor must fall back to comparing the texts and give exactly the same series."""
    import numpy as np

    import services.metric_scan as metrics

    data = b"".join((LOGS / name).read_bytes() for name in ("hf_trainer.log", "lightning.log", "tqdm_plain.log"))
    data += b"a_key_longer_than_thirty_two_bytes_in_all=1.5 loss=0.25\nloss=0.5 " + b"x" * 40 + b"=2\nend_key=3"
    expected = MetricExtractor().feed(data, 0.0, final=True)
    monkeypatch.setattr(metrics, "MIX", np.uint64(0))
    assert MetricExtractor().feed(data, 0.0, final=True) == expected
    names = {p[0] for p in expected}
    assert {"loss", "a_key_longer_than_thirty_two_bytes_in_all", "end_key", "eval_loss", "learning_rate"} <= names


def xs(series, name, rank=None):
    return [x for x, _ep, _v in series[(name, rank)]]


def test_hugging_face_trainer_points_sit_at_the_global_step_the_log_shows():
    """logging_steps=10, an evaluation every 20 steps: the chart's x is 10, 20, 30 … and each evaluation sits at
    the step it was made (the bar drawn before a dict is stale; the redraw right after it is the Trainer's step)."""
    series, st = extract("hf_trainer_steps.log")
    assert xs(series, "loss") == [10, 20, 30, 40, 50, 60]
    assert values(series, "loss")[0] == 0.6933 and values(series, "loss")[-1] == 0.6793
    assert xs(series, "eval_loss") == [20, 40, 60] and values(series, "eval_loss") == [0.6917, 0.6896, 0.6881]
    assert xs(series, "train_loss") == [60] and st.progress() == 1.0
    series, _st = extract("hf_trainer.log")  # logging_steps=5, an evaluation per epoch of 20 steps
    assert xs(series, "loss") == list(range(5, 61, 5)) and xs(series, "eval_loss") == [20, 40, 60]


def test_lightning_step_metrics_on_the_bar_warnings_are_not_series_and_the_run_ends_at_100_percent():
    series, st = extract("lightning_steps.log")
    step = series[("train_loss_step", None)]
    assert [x for x, _ep, _v in step][:3] == [1, 2, 3] and step[-1][0] == 80, "x is Lightning's global step"
    assert values(series, "val_loss") == [1.67, 0.396, 0.203, 0.159] and xs(series, "val_loss") == [20, 40, 60, 80]
    assert values(series, "train_loss_epoch") == [2.07, 0.581, 0.188, 0.126]
    assert values(series, "lr")[0] == 0.05 and st.progress(4) == 1.0
    # Lightning's default (Rich) bar says "Epoch 3/3" for the 4th epoch of 4.
    _series, rich = extract("lightning_rich.log")
    assert rich.progress() == 1.0 and rich.total_epochs == 4
    # A real Lightning log with the num_workers warning (see the README for where it comes from).
    series, _st = extract("lightning_num_workers.log")
    assert not any("num_workers" in name for name, _r in series)
    assert values(series, "train_loss_step") == [0.599] and values(series, "train_loss_epoch") == [0.594]


def test_tqdm_bars_per_epoch_finish_at_100_percent_and_units_stay_with_their_series():
    series, st = extract("tqdm_epochs.log")
    assert st.progress() == 1.0 and (st.epoch, st.total_epochs) == (6, 6)
    assert values(series, "mem (GB)") == [0.86] and ("mem", None) not in series
    assert xs(series, "loss")[-1] == 5 * 20 + 18 and values(series, "loss")[-1] == 0.0861  # first shown at 18/20
    data = (LOGS / "tqdm_epochs.log").read_bytes()
    ex = MetricExtractor()
    ex.feed(data[: data.index(b"Epoch 4/6:  60%")], 0.0)  # read up to the 12/20 drawing of epoch 4
    assert 3.4 / 6 < ex.state.progress() < 3.6 / 6


def test_torchrun_ranks_keep_their_own_steps():
    series, st = extract("torchrun_2ranks.log")
    assert xs(series, "loss", 1) == xs(series, "loss", 0) == [5, 10, 10, 15, 20, 20, 25, 30, 30]
    assert values(series, "loss", 1)[:3] == [16.3555, 5.3363, 17.4654]
    assert st.progress() == 1.0 and st.ranks["1"].progress() == 1.0


def test_an_nvidia_smi_banner_gives_no_series():
    series, _st = extract("nvidia_smi.log")
    assert series == {}


RECORDED = sorted(p.name for p in LOGS.glob("*.log"))


def read_in(data: bytes, cuts: list[int]) -> str:
    """Series, progress and the card's latest figures, as text (a NaN loss equals itself there)."""
    ex = MetricExtractor()
    points: list = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
        points += ex.feed(data[last:cut], 0.0, final=cut == len(data))
        last = cut
    series: dict = {}
    for n, x, ep, v, r in points:
        series.setdefault((n, r), []).append((x, ep, v))
    st = ex.state
    return repr((series, st.progress(4), st.latest, {r: t.progress(4) for r, t in st.ranks.items()}))


WHOLE = {name: read_in((LOGS / name).read_bytes(), []) for name in RECORDED}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hs.sampled_from(RECORDED), cuts=hs.lists(hs.floats(0, 1), max_size=12))
def test_any_chunking_of_any_recorded_log_reads_like_the_whole_log(name, cuts):
    data = (LOGS / name).read_bytes()
    got = read_in(data, [int(c * len(data)) for c in cuts])
    assert got == WHOLE[name]


@pytest.mark.parametrize("name", RECORDED)
def test_reading_a_recorded_log_byte_by_byte_near_its_breaks_reads_like_the_whole_log(name):
    """Cuts right before, between and after a CR LF and a bar's CR: where a chunked read goes wrong first."""
    data = (LOGS / name).read_bytes()
    cuts = [i + d for i in range(len(data)) if data[i] in (10, 13) for d in (0, 1)][:400]
    assert read_in(data, cuts) == WHOLE[name]


def untitled_bar_epochs(epochs: int, summary: str) -> str:
    """A tqdm loop per epoch without an "Epoch N:" label, its bar redrawn with "\\r", then the epoch's summary."""
    text = ""
    for e in range(1, epochs + 1):
        text += "".join(f"\r{i * 5:3d}%|{'#' * (i // 2):10s}| {i}/20 [00:0{i % 10}<00:01, 9.1it/s]" for i in range(21))
        text += "\n" + summary.format(e=e, loss=1 / e, acc=0.5 + e / 10) + "\n"
    return text


@pytest.mark.parametrize("summary", ["Epoch: {e}, Loss: {loss:.4f}, Accuracy: {acc:.2f}",
                                     "epoch={e} loss={loss:.4f} acc={acc:.2f}"])
def test_epoch_summaries_after_a_bar_without_an_epoch_label_chart_every_epoch(summary):
    """A bar without a label is no Hugging Face Trainer bar for the summary line after it: each epoch's point is
    charted when printed, the last one too, and a one-epoch run has its loss."""
    points = MetricExtractor().feed(untitled_bar_epochs(3, summary), 0.0, final=True)
    loss = [(ep, v) for n, _x, ep, v, _r in points if n == "loss"]
    assert loss == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    assert [ep for n, _x, ep, _v, _r in points if n in ("accuracy", "acc")] == [1, 2, 3]
    one = MetricExtractor().feed(untitled_bar_epochs(1, summary), 0.0, final=True)
    assert [(n, v) for n, _x, _ep, v, _r in one if n == "loss"] == [("loss", 1.0)]


def test_a_trainer_dict_with_no_redraw_after_it_is_charted_at_the_end_of_the_log():
    data = (LOGS / "hf_trainer_steps.log").read_bytes()
    last_dict = data.rindex(b"{'loss'")
    cut = data.index(b"\n", last_dict) + 1  # the log as it ends right after the Trainer wrote its last loss dict
    points = MetricExtractor().feed(data[:cut], 0.0, final=True)
    loss = [(x, v) for n, x, _ep, v, _r in points if n == "loss"]
    assert loss[-1] == (60, 0.6793) and [x for x, _v in loss] == [10, 20, 30, 40, 50, 60]


def test_a_long_key_with_a_unit_keeps_to_the_stores_name_length():
    points = MetricExtractor().feed(b"%s=3.2GB %s=12 samples/s, loss=0.5\n" % (b"m" * 62, b"t" * 60), 0.0, final=True)
    names = [n for n, *_rest in points]
    assert names[-1] == "loss" and max(map(len, names)) == 64
    assert names[0] == "m" * 59 + " (GB)" and names[1].endswith(" (samples/s)")


def test_a_bar_redrawn_unchanged_around_tqdm_write_reads_the_same_however_the_log_is_cut():
    """tqdm.write("epoch=… loss=…") clears the bar, prints, and draws the same bar again."""
    text = ""
    for i in range(1, 21):
        bar = f"\r{i * 5:3d}%|{'#' * (i // 2):10s}| {i}/20 [00:01<00:00, 12.{i}it/s]"
        text += bar
        if i % 5 == 0:
            text += "\r" + " " * 45 + f"\repoch={i / 20:.2f} loss={1 / i:.4f}\n" + bar
        if i == 12:
            text += "\rstep=3 loss=0.7\n" + bar
    data = text.encode()
    whole = read_in(data, [])
    assert all(read_in(data, [cut]) == whole for cut in range(1, len(data))), "a cut read changes the series"


def mixed_line(draw) -> str:
    """One line (or bar drawing) of the kinds a real log mixes: Trainer dicts, tqdm and Rich bars, torchrun ranks,
    step and epoch lines, the protocol, units, tqdm.write's clearing, banners."""
    i, n = draw(hs.integers(0, 10)), 10
    loss = draw(hs.sampled_from(["0.5", "0.50", "0.4"]))  # Lightning pads some figures: one value either way
    bar = f"{i * 10:3d}%|{'#' * i:10s}| {i}/{n} [00:01<00:02, 3.{i}it/s, loss={loss}]"
    small = draw(hs.integers(0, 4))
    return draw(hs.sampled_from([
        f"{{'loss': {draw(hs.sampled_from(['0.5', '0.4']))}, 'grad_norm': 1.2, 'learning_rate': 5e-05, "
        f"'epoch': {draw(hs.sampled_from(['0.25', '0.5', '1.0']))}}}\n",
        "\r" + bar,
        f"\rEpoch {small}: " + bar,
        f"\rEpoch {small}/4: " + bar,
        f"[default{small % 2}]:step={draw(hs.integers(0, 50))} loss=0.{small}\n",
        f"[rank{small % 3}]:Epoch {small}/3 loss: 0.{i}\n",
        f'##portal {{"loss": 0.{i}, "step": {draw(hs.integers(0, 100))}}}\n',
        f"mem={small}.{i}GB time=12ms acc=0.{i}\r\n",
        f"Epoch {small}/4\n",
        f"Step {i}/10 loss=0.{small % 2 + 1}\n",
        f"Epoch {small % 4}/3  " + "\u2501" * (small + 1) + f" {2 * i}/20 0:00:01 v_num: 0 loss: 0.3\n",
        f"epoch: {small}, loss: 0.{i}\n",
        f"epoch={small} loss=0.{i}\n",
        "\r" + " " * 40 + "\r",
        "val acc=0.91 throughput 3.2 samples/s\n",
        "Driver Version: 535.104.05   CUDA Version: 12.2\n",
        "loss: nan\n",
        "\n",
        "Epoch 4/4: 100%|##########| 20/20 [00:01<00:00]\n",
    ]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=hs.lists(hs.data(), min_size=1, max_size=40), cuts=hs.lists(hs.floats(0, 1), max_size=6))
def test_any_chunking_of_a_generated_mixed_log_reads_like_the_whole_log(lines, cuts):
    data = "".join(mixed_line(d.draw) for d in lines).encode()
    assert read_in(data, [int(c * len(data)) for c in cuts]) == read_in(data, [])
