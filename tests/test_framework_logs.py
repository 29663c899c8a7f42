"""The metric extractor on real output of common training stacks, recorded from real CPU runs
(tests/data/framework_logs/README.md says how): Hugging Face Trainer, PyTorch Lightning, tqdm, torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.metrics import MetricExtractor, ParserState
from services.reasons import failure_reason

LOGS = Path(__file__).parent / "data" / "framework_logs"


def extract(name: str, chunk: int | None = None) -> tuple[dict[tuple[str, int | None], list[tuple]], ParserState]:
    """Series by (name, rank) and the final state; optionally fed in chunks, as the sync loop reads a live log."""
    data = (LOGS / name).read_bytes()
    ex = MetricExtractor(ParserState())
    points = []
    if chunk is None:
        points = ex.feed(data, 0.0)
    else:
        for i in range(0, len(data), chunk):  # the state round-trips through JSON, as between two syncs
            ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
            points += ex.feed(data[i:i + chunk], float(i))
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
    ex.feed(half, 0.0)
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
    ex.feed(data[: data.index(b"Epoch 2:  48%")], 0.0)
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

    import services.metrics as metrics

    data = b"".join((LOGS / name).read_bytes() for name in ("hf_trainer.log", "lightning.log", "tqdm_plain.log"))
    data += b"a_key_longer_than_thirty_two_bytes_in_all=1.5 loss=0.25\nloss=0.5 " + b"x" * 40 + b"=2\nend_key=3"
    expected = MetricExtractor().feed(data, 0.0)
    monkeypatch.setattr(metrics, "_MIX", np.uint64(0))
    assert MetricExtractor().feed(data, 0.0) == expected
    names = {p[0] for p in expected}
    assert {"loss", "a_key_longer_than_thirty_two_bytes_in_all", "end_key", "eval_loss", "learning_rate"} <= names
