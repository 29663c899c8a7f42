import math

import numpy as np

from services.downsample import lttb
from services.metrics import MetricExtractor, ParserState, eta_seconds

DESIGN_LOG = """[2024-02-24 15:23:45] Epoch 47/100
[2024-02-24 15:23:46] Loss: 0.342
[2024-02-24 15:23:47] Accuracy: 0.856
[2024-02-24 15:23:48] GPU Memory: 72GB
[2024-02-24 15:23:49] Samples/sec: 1250
[2024-02-24 15:23:50] Gradient norm: 0.8
"""


def series(points):
    out = {}
    for name, x, _epoch, value, _rank in points:
        out.setdefault(name, []).append((x, value))
    return out


def test_design_log_format():
    ex = MetricExtractor()
    s = series(ex.feed(DESIGN_LOG, now=1.0))
    assert s == {
        "loss": [(0, 0.342)], "accuracy": [(0, 0.856)], "gpu_memory (GB)": [(0, 72.0)],
        "samples/sec": [(0, 1250.0)], "gradient_norm": [(0, 0.8)],
    }
    assert (ex.state.epoch, ex.state.total_epochs) == (47, 100)
    # Timestamps are not metrics.
    assert not any(k[0].isdigit() for k in s)


def test_key_value_pairs_and_steps_on_one_line():
    ex = MetricExtractor()
    s = series(ex.feed("loss=0.5 step=10 val acc: 0.7\nstep=20 loss=0.4\n", now=1.0))
    # A step on the line applies to every value of that line, wherever it stands.
    assert s["loss"] == [(10, 0.5), (20, 0.4)]
    assert s["val_acc"] == [(10, 0.7)]


def test_json_protocol_lines_are_exact():
    ex = MetricExtractor()
    pts = ex.feed('##portal {"step": 3, "epoch": 1, "loss": 0.25, "lr": 1e-4, "note": "x"}\n', now=1.0)
    assert sorted((n, x, v) for n, x, _, v, _ in pts) == [("loss", 3, 0.25), ("lr", 3, 1e-4)]


def test_protocol_helper_output_round_trips(capsys):
    from services.scriptkit.portal_metrics import log_metrics

    log_metrics(step=7, epoch=2, total_epochs=5, loss=float("nan"), acc=0.5)
    ex = MetricExtractor()
    pts = series(ex.feed(capsys.readouterr().out, now=1.0))
    assert pts["acc"] == [(7, 0.5)]
    assert "loss" not in pts  # NaN cannot be a chart point...
    assert math.isnan(ex.state.latest["loss"])  # ...but the latest value says the run diverged
    assert ex.state.total_epochs == 5


def test_state_survives_chunk_boundaries():
    ex = MetricExtractor()
    ex.feed("Epoch 1/3\nLoss: 1.0\n", now=1.0)
    restored = MetricExtractor(ParserState.from_json(ex.state.to_json()))
    s = series(restored.feed("Epoch 2/3\nLoss: 0.5\n", now=2.0))
    assert s["loss"] == [(1, 0.5)]  # second point of the series, not a restart at 0
    assert restored.state.progress() == 1 / 3


def test_noise_is_not_a_metric():
    ex = MetricExtractor()
    s = series(ex.feed("Connecting to http://example.com:8080 at localhost:29500\nlevel: info\n", now=1.0))
    assert s == {}


def test_eta_ignores_a_slow_first_epoch_and_says_unknown_without_a_rate():
    assert eta_seconds([[0.0, 0.0]], now=0.0) is None
    # first epoch took 100 s (warm-up), then 10 s each; 10 epochs in all
    marks = [[0.0, 0.0], [100.0, 0.1], [110.0, 0.2], [120.0, 0.3]]
    assert eta_seconds(marks, now=120.0) == 70.0


def test_lttb_keeps_peaks_and_limits_points():
    x = np.arange(1_000_000, dtype=float)
    y = np.sin(x / 5000.0)
    y[123_456] = 50.0  # a spike a user must see
    dx, dy = lttb(x, y, 2000)
    assert len(dx) == 2000
    assert dy.max() == 50.0
    assert dx[0] == 0 and dx[-1] == 999_999


def test_protocol_line_without_newline_and_not_at_line_start():
    ex = MetricExtractor()
    assert ex.feed('##portal {"loss": 1.5}', now=1.0) == [], "an unfinished line waits for its end"
    pts = ex.feed("", now=1.0, final=True)
    assert [(n, v) for n, _, _, v, _ in pts] == [("loss", 1.5)]
    # Mentioned inside another line it is not the protocol (its pairs still count as text).
    pts = MetricExtractor().feed('Epoch 1/2\necho ##portal {"loss": 2.5}\n', now=1.0)
    assert [(n, v) for n, _, _, v, _ in pts] == [("loss", 2.5)]


def test_empty_and_metric_free_chunks():
    ex = MetricExtractor()
    assert ex.feed("", now=1.0) == []
    assert ex.feed("no numbers here\nnor here: none\n", now=1.0) == []
    assert ex.feed(b"\xff\xfe binary junk = \x00\n", now=1.0) == []


def test_progress_words_must_be_whole():
    ex = MetricExtractor()
    ex.feed("Steps 3/10 done\nrepoch 4/5\n", now=1.0)
    assert ex.state.epoch is None
    ex.feed("Epoch [3/10] Step 20/100\n", now=2.0)
    assert (ex.state.epoch, ex.state.total_epochs, ex.state.step, ex.state.total_steps) == (3, 10, 20, 100)


def test_pathological_lines_stay_fast_and_out_of_range_numbers_are_not_progress():
    import time

    from services.metrics import MetricExtractor, ParserState

    n = 40_000  # long runs of blanks once made two patterns backtrack for minutes
    nasty = [b" " * n + b"x%|#| 1/2 [\n", b"[a]:" + b" " * n + b"x%|#| 1/2 [\n", b"Step" + b" " * n + b"x\n",
             b" " * n + b"x%|#| 1/2 [" * 200 + b"\n", b"Epoch" + b"\t " * n + b":\n"]
    for line in nasty:
        t = time.perf_counter()
        MetricExtractor(ParserState()).feed(line, 0.0)
        assert time.perf_counter() - t < 1.0, line[:20]
    ex = MetricExtractor(ParserState())
    ex.feed(b"Epoch 99999999999/3\nstep=1e20 loss=0.5\n[rank99999999]: loss=0.7\n"
            b" 50%|#| 1/99999999999999999999 [00:01]\n"
            b'##portal {"total_epochs": 1e300, "rank": 10000000000, "acc": 0.5}\n', 0.0)
    st = ex.state
    assert st.epoch is None and st.total_epochs is None and st.step is None and st.total_steps is None
    assert st.latest == {"loss": 0.7, "acc": 0.5} or st.latest["acc"] == 0.5


def test_protocol_floods_and_huge_numbers_neither_stall_nor_break_the_extractor():
    import time

    from services.metrics import MetricExtractor, ParserState

    ex = MetricExtractor(ParserState())
    t = time.perf_counter()
    ex.feed(b"##portal {" * 40_000 + b"\n", 0.0)  # once quadratic: 52 s for 400 KB
    ex.feed(b" 50%|#| 1/2 [" * 40_000 + b"\n", 0.0)
    assert time.perf_counter() - t < 2.0
    points = ex.feed(b'##portal {"loss": ' + b"9" * 400 + b', "acc": 0.5, "total_steps": ' + b"9" * 400 + b"}\n", 0.0)
    assert [(n, v) for n, _x, _e, v, _r in points] == [("acc", 0.5)]


def test_a_ranks_progress_is_left_out_also_in_a_chunk_without_a_line_break():
    """The sync loop may pass a log's last line alone, with no line break yet: a rank-1 prefix still marks it
    as another rank's, so neither its bar nor its epoch moves the job's progress; its metrics stay per rank."""
    for text in (b"[rank1]:100%|##########| 10/10 [00:01<00:00]", b"[rank1]:Epoch 3/10 loss=0.5"):
        for tail in (b"", b"\n"):
            ex = MetricExtractor()
            points = ex.feed(text + tail, now=1.0, final=True)
            assert (ex.state.step, ex.state.epoch, ex.state.epochs_done) == (None, None, None), (text, tail)
            assert all(p[4] == 1 for p in points)
    ex = MetricExtractor()
    ex.feed(b"[rank0]:Epoch 3/10", now=1.0, final=True)
    assert (ex.state.epoch, ex.state.total_epochs) == (3, 10)


def test_a_line_cut_between_two_reads_is_read_whole():
    """The sync loop reads what the job wrote so far: a line cut mid-word ("E" | "poch 2/3 loss=0.5") is read
    once whole, not as a "poch" series and a lost point; a CR LF cut in two is one line break."""
    ex = MetricExtractor()
    assert ex.feed("Epoch 1/3 loss=0.9\nE", now=1.0) == [("loss", 0, 1, 0.9, None)]
    ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
    assert ex.feed("poch 2/3 loss=0.5\r", now=2.0) == []
    ex = MetricExtractor(ParserState.from_json(ex.state.to_json()))
    assert ex.feed("\n", now=3.0) == [("loss", 1, 2, 0.5, None)]
    assert ex.state.progress() == 1 / 3 and ex.state.pending == b""


def test_units_versions_and_code_are_read_as_a_person_reads_them():
    s = series(MetricExtractor().feed("mem=3.2GB step_time: 12.5ms acc=91% throughput=310 samples/s\n"
                                      "Driver Version: 535.104.05   CUDA Version: 12.2\n"
                                      "set `num_workers=4` in the `DataLoader`\n", now=1.0, final=True))
    assert s == {"mem (GB)": [(0, 3.2)], "step_time (ms)": [(0, 12.5)], "throughput (samples/s)": [(0, 310.0)],
                 "acc (%)": [(0, 91.0)]}


def test_numbers_written_in_thousands_are_read_whole():
    # Hugging Face's "Num examples = 1,000" header and a "tokens=12,345" figure: 1000 and 12345, not 1 and 12.
    ex = MetricExtractor()
    log = ("  Num examples = 1,000\n  Number of trainable parameters = 124,439,808\nEpoch 1/2\n"
           "loss=0.5 tokens=12,345\nEpoch 2/2\nloss=0.4 tokens=1,234,567 sizes=[1,128,3] x=1,5\n")
    s = series(ex.feed(log, now=1.0, final=True))
    assert [v for _x, v in s["tokens"]] == [12345.0, 1234567.0]
    assert [v for _x, v in s["loss"]] == [0.5, 0.4]
    assert "sizes" not in s or s["sizes"][0][1] != 1128.0  # a list of numbers is no grouped figure
    assert s["x"][0][1] == 1.0  # "1,5" is no thousands grouping
    from services.metric_state import printed_at_start

    assert printed_at_start(ex.state.to_json()) == {"num_examples": 1000.0,
                                                     "trainable_parameters": 124439808.0}
