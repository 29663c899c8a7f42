"""Metrics from log text, without changes to the training script.

Understood, per line:
- the portal's JSON-line protocol: ``##portal {"loss": 0.42, "step": 100}`` (see docs/scripts.md);
- progress: ``Epoch 47/100``, ``Epoch [3/10]``, ``Step 200/5000``, tqdm bars (``Epoch 6/6: 100%|…| 20/20``),
  Lightning's bars (0-based epochs; the Rich one too), the Hugging Face Trainer's bar over the whole run;
- ``key=value`` and ``key: value`` pairs: ``Loss: 0.342``, ``val acc=0.91``, ``'loss': 0.3``, ``mem=3.2GB``
  (a unit stays with its series: ``mem (GB)``);
- torchrun's rank prefixes (``[default1]:``, ``[rank1]:``): each rank's points with that rank's own steps.

The x of a point is the run's global step as the log shows it: the Trainer's bar count at the moment it wrote
the dict (its redraw right after the dict), the count of a per-epoch bar plus the epochs before it, a printed
``step=``/``Step d/t`` (restarting each epoch, or not), else a running count per series.

What is found never depends on where the log was cut into reads: the unfinished last line waits in the state
for the next chunk, and so does everything else that crosses a boundary (see `services.metric_state`). The
scanning itself is in `services.metric_scan`.
"""

from __future__ import annotations

import json
import math
from itertools import repeat
from typing import Any

import numpy as np

from services.metric_scan import (
    _STEP_KEYS,
    MAX_KEY_LEN,
    RANKED,
    REDRAW,
    bar_drawings,
    line_ranks,
    pairs,
    protocol_lines,
    specials,
)
from services.metric_state import MARKS_KEPT, MAX_COUNT, MAX_EPOCHS, MAX_RANK, ParserState, Track, eta_seconds

__all__ = ["PROTOCOL_PREFIX", "MetricExtractor", "ParserState", "Point", "Track", "eta_seconds"]

PROTOCOL_PREFIX = "##portal "
# A line longer than this without a line break is taken as it is instead of waiting for its end.
MAX_PENDING = 1 << 20
# Trainer dicts held for the bar's next redraw, at most (a run without one must not grow the state).
MAX_DEFERRED = 4096
# Names held as configuration, and points per name, at most (a log without step markers must not grow the state).
MAX_HELD = 256
MAX_HELD_POINTS = 64

# A point: (series name, x step, epoch, value, rank)
Point = tuple[str, int, "float | None", float, "int | None"]


def _complete_lines(data: bytes, final: bool) -> tuple[bytes, bytes]:
    """The whole lines of `data` and what is left over. A carriage return at the very end may be the first half
    of a CRLF, or a bar redraw: which one the next byte says, so that line waits too."""
    if final:
        return data, b""
    end = len(data) - 1 if data.endswith(b"\r") else len(data)
    cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
    if cut < 0 and len(data) <= MAX_PENDING:
        return b"", data
    if len(data) - cut - 1 > MAX_PENDING:
        return data, b""
    return data[: cut + 1], data[cut + 1:]


class MetricExtractor:
    """Feeds on log text chunk by chunk; yields metric points and keeps progress state."""

    def __init__(self, state: ParserState | None = None):
        self.state = state or ParserState()

    def feed(self, data: bytes | str, now: float, final: bool = False) -> list[Point]:
        """The points in `data` (the bytes after the previous chunk). `final`: the log ends here, so its last
        line counts even without a line break."""
        if isinstance(data, str):
            data = data.encode("utf-8", errors="replace")
        st = self.state
        data, st.pending = _complete_lines(st.pending + data if st.pending else data, final)  # no copy of a big read
        points: list[Point] = []
        progress_before = st.progress()
        if data:
            self._scan(data, points)
        if final and st.deferred:  # no redraw will come: the Trainer dicts still held sit at the bar's last count
            step = st.step or 0
            points += [(key, step, epoch, v, None) for key, v, epoch in st.deferred]
            st.deferred = []
        if final and st.held:
            self._release_without_steps(points)
        progress_after = st.progress()
        if progress_after is not None and progress_after != progress_before:
            st.marks.append([now, progress_after])
            del st.marks[:-MARKS_KEPT]
        return points

    def _scan(self, data: bytes, points: list[Point]) -> None:
        a = np.frombuffer(data, dtype=np.uint8)
        # Control characters are rare: find them all, then keep the line breaks (6x faster than two masks).
        low = np.flatnonzero(a <= 13)
        breaks = low[(a[low] == 10) | (a[low] == 13)]
        # A line that ends in a bare carriage return is a progress-bar redraw, overdrawn by the next one.
        nxt = np.minimum(breaks + 1, max(len(a) - 1, 0))
        redraws = np.append((a[breaks] == 13) & ((breaks + 1 >= len(a)) | (a[nxt] != 10)), False)
        json_lines = protocol_lines(data, breaks)
        ranks = line_ranks(data, breaks)
        drawings = bar_drawings(data, breaks) if b"%|" in data else None
        kinds = redraws.astype(np.int8) * REDRAW
        if drawings is not None and drawings[3]:
            # a bar's last drawing ends in a line break, yet its figures were on the redraws before
            kinds[np.asarray(drawings[2], dtype=np.int64)[drawings[3]]] = REDRAW
        if ranks:
            kinds[np.fromiter(ranks, dtype=np.int64, count=len(ranks))] = RANKED
        lines, pos, kv, progress = pairs(data, a, breaks, {line for _pos, line, _raw in json_lines}, kinds,
                                         self.state.seen)
        events = specials(data, breaks, json_lines, drawings, pos[progress])
        # A line's pairs go to _emit together, unless an event sits between them: the runs of pairs on one line
        # with no event in between, found in bulk (no Python step per pair).
        before = np.searchsorted(np.fromiter((e[1] for e in events), dtype=np.int64, count=len(events)), pos)
        cut = np.flatnonzero((lines[1:] != lines[:-1]) | (before[1:] != before[:-1])) + 1
        firsts = np.concatenate(([0], cut)).astype(np.int64) if len(lines) else cut
        ends = np.append(cut, len(lines)).tolist() if len(lines) else []
        run_lines = lines[firsts]
        # Whether a run holds an 'epoch' or step key (most do not: their pairs are all points), and 2 where its line
        # is a Hugging Face Trainer dict ("{'loss': …"), the one kind whose step is the bar's next redraw.
        if len(firsts):
            has = np.logical_or.reduceat(progress, firsts)
            at = np.flatnonzero(has)
            at_lines = run_lines[at]
            starts = np.where(at_lines > 0, breaks[np.maximum(at_lines - 1, 0)] + 1, 0) if len(breaks) else at_lines * 0
            if ranks:  # after a rank prefix ("[default0]:{'loss': …")
                starts = np.asarray([data.find(b"]:", st) + 2 if line in ranks else st
                                     for st, line in zip(starts.tolist(), at_lines.tolist(), strict=True)],
                                    dtype=np.int64)
            kinds_of_run = has.astype(np.int8)
            kinds_of_run[at[a[np.minimum(starts, len(a) - 1)] == 123]] = 2
            run_progress = kinds_of_run.tolist()
        else:
            run_progress = []
        run_redraw = redraws[run_lines].tolist()
        # (without ranks an endless None, hence strict=False below)
        run_rank = [ranks.get(line) for line in run_lines.tolist()] if ranks else repeat(None)
        emit, event = self._emit, self._event
        ei = 0
        for first, end, events_before, redraw, rank, has_progress in zip(
                firsts.tolist(), ends, before[firsts].tolist(), run_redraw, run_rank, run_progress, strict=False):
            while ei < events_before:
                event(events[ei], points, ranks)
                ei += 1
            emit(kv[first:end], points, rank, redraw, has_progress)
        for ev in events[ei:]:
            event(ev, points, ranks)

    def _event(self, ev: tuple[str, int, int, Any], points: list[Point], ranks: dict[int, int]) -> None:
        kind, _pos, line, value = ev
        if kind == "json":
            self._json_line(value, points)
            return
        st = self.state
        rank = ranks.get(line)
        track = st.track(rank) if rank else st
        track.started = True  # every event left is a step or epoch marker: what is printed from here on is a metric
        if kind == "bar":  # the most frequent kind (a mixed log redraws its bar after every Trainer dict)
            label, label_total, done, total = value
            if label is None:  # one bar over the whole run (Hugging Face Trainer): steps
                # A shorter nested bar (the Trainer's evaluation) must not reset the run's progress.
                if total and total >= (track.total_steps or 0) and total <= MAX_COUNT:
                    track.step, track.total_steps, track.bar_steps = done, total, True
                    if st.deferred and not rank:
                        # The Trainer writes its dict, then redraws its bar: that redraw's count is the dict's step.
                        for key, v, epoch in st.deferred:
                            points.append((key, done, epoch, v, None))
                        st.deferred = []
            elif total and label <= MAX_EPOCHS and (label_total or 0) <= MAX_EPOCHS:
                track.epoch_bar(label, label_total, done, total)
        elif kind == "epoch":
            track.epoch_fraction(*value)
        elif kind == "step":
            track.step_fraction(*value)
        else:
            label, last, done, total = value
            if total and label <= MAX_EPOCHS and last <= MAX_EPOCHS:
                track.rich_bar(label, last, done, total)

    def _json_line(self, raw: bytes, points: list[Point]) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        st = self.state
        rank = obj.pop("rank", None)
        total_epochs = _as_int(obj.pop("total_epochs", None), MAX_EPOCHS)
        total_steps = _as_int(obj.pop("total_steps", None))
        st.total_epochs = total_epochs or st.total_epochs
        st.total_steps = total_steps or st.total_steps
        # A key must be printable text: PostgreSQL refuses NUL, and a chart title cannot show control characters.
        kv = [(str(k)[:MAX_KEY_LEN], float(v)) for k, v in obj.items() if _is_number(v) and str(k).isprintable()]
        valid_rank = isinstance(rank, int) and not isinstance(rank, bool) and 0 <= rank <= MAX_RANK
        # The protocol says what is a metric: nothing in it is taken for configuration.
        self._emit(kv, points, rank if valid_rank else None, config=False)

    def _emit(self, kv: list[tuple[str, float]], points: list[Point], rank: int | None, redraw: bool = False,
              progress: int = 1, config: bool = True) -> None:
        """One line's pairs: its 'epoch' and step keys move the rank's track (`progress`: there may be some; 2: the
        line is a Trainer dict), the other keys are points, or configuration (`config`: they may be) while they
        have been printed only before the first step (`_held`)."""
        st = self.state
        track = st.track(rank) if rank else st
        has_step = has_epoch = False
        if progress:
            metrics: list[tuple[str, float]] = []
            for key, value in kv:
                if key == "epoch":
                    has_epoch = True
                    if not (math.isfinite(value) and 0 <= value <= MAX_EPOCHS):
                        continue
                    if value != int(value):  # epochs done so far, as the HF Trainer logs them
                        track.epochs_done = value
                        track.epoch = max(1, math.ceil(value))
                    else:
                        track.epoch = value
                elif key in _STEP_KEYS:
                    if math.isfinite(value) and 0 <= value <= MAX_COUNT:
                        track.step = int(value)
                        has_step = True
                else:
                    metrics.append((key, value))
            if has_epoch or has_step:
                track.started = True
            if not metrics:
                return
            kv = metrics
        epoch, step = track.epoch, track.step
        isfinite = math.isfinite
        held = self._held if config and (st.held or not track.started) else None
        if rank:
            counters = st.counters
            for key, value in kv:
                if held is not None and held(track, f"{key}@{rank}", key, value, rank, points):
                    continue
                if not isfinite(value):
                    continue
                if step is None:
                    slot = f"{key}@{rank}"
                    x = counters.get(slot, 0)
                    counters[slot] = x + 1
                    points.append((key, x, epoch, value, rank))
                else:
                    points.append((key, step, epoch, value, rank))
            return
        # A Trainer dict ('epoch' in it, its bar on screen): its step is the count of the bar's next redraw.
        # Only a dict: an "Epoch: 3, Loss: 0.4" summary after a bar without a label is at the step it was printed.
        defer = has_epoch and progress == 2 and track.bar_steps and not has_step
        latest = st.latest
        for key, value in kv:
            if redraw and latest.get(key) == value:
                continue  # a progress bar redrawn with the same figures: one point, not one per redraw
            if held is not None and held(track, key, key, value, rank, points):
                continue
            latest[key] = value  # a NaN loss is news for the card, though it cannot be a chart point
            if not isfinite(value):
                continue
            if defer and len(st.deferred) < MAX_DEFERRED:
                st.deferred.append([key, value, epoch])
            elif step is None:
                x = st.counters.get(key, 0)
                st.counters[key] = x + 1
                points.append((key, x, epoch, value, rank))
            else:
                points.append((key, step, epoch, value, rank))


    def _held(self, track: Track, slot: str, key: str, value: float, rank: int | None, points: list[Point]) -> bool:
        """Whether a value is (still) configuration rather than a point: a name printed only before the first step
        of its rank, with one value. Printed again after that, or with another value (a loop without step markers),
        it is a metric after all: its held points are charted then, at the x they had (`slot`: the name's counter
        and its entry in `held`)."""
        st = self.state
        mine = st.held.get(slot)
        if mine is None:
            if track.started or len(st.held) >= MAX_HELD:
                return False
            mine = st.held[slot] = []
        elif track.started or not _same(mine[-1][2], value):
            track.started = True  # a value that changes before any marker: the training loop is running
            del st.held[slot]
            points += [(key, x, epoch, v, rank) for x, epoch, v in mine if math.isfinite(v)]
            return False
        if len(mine) < MAX_HELD_POINTS:
            step = track.step
            if step is None:
                step = st.counters.get(slot, 0)
                st.counters[slot] = step + 1
            mine.append([step, track.epoch, value])
        return True


    def _release_without_steps(self, points: list[Point]) -> None:
        """At the log's end: what a rank that never showed a step held is its results (an evaluation script's
        "accuracy=0.91"), not configuration, which is only what comes before a first step."""
        st = self.state
        for slot in list(st.held):
            key, _at, rank_text = slot.partition("@")
            rank = int(rank_text) if rank_text else None
            if (st.track(rank) if rank else st).started:
                continue
            mine = st.held.pop(slot)
            points += [(key, x, epoch, v, rank) for x, epoch, v in mine if math.isfinite(v)]
            if rank is None:
                st.latest[key] = mine[-1][2]


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def _is_number(v: Any) -> bool:
    """A JSON number that fits a float (a 400-digit integer would overflow every later use)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, float) or abs(v) < 10**300


def _as_int(v: Any, limit: int = MAX_COUNT) -> int | None:
    return int(v) if _is_number(v) and math.isfinite(v) and 0 < v <= limit else None
