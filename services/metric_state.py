"""What the metric extractor carries from one chunk of a log to the next (stored as JSON between syncs), and the
ETA from it. One `Track` per rank: the job's progress is its first rank's, but every rank's points need their
own step numbers."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

# Steps, epochs and totals beyond this are not progress (and would not fit the store's 64-bit columns).
MAX_COUNT = 10**15
MAX_EPOCHS = 10**6
MAX_RANK = 100_000
MARKS_KEPT = 8

_TRACK_FIELDS = ("epoch", "total_epochs", "step", "total_steps", "epochs_done", "epoch_base", "step_seen",
                 "steps_per_epoch_seen", "per_epoch_steps", "step_epoch", "bar_steps", "started")


@dataclass
class Track:
    """Where one rank stands: its epoch and step as the log shows them, and the global step its points get."""

    epoch: float | None = None
    total_epochs: int | None = None
    # The global step (the x of a point), and the run's step total where the log gives one.
    step: int | None = None
    total_steps: int | None = None
    # Fractional epochs done (HF Trainer's 'epoch': 0.25, or a bar under "Epoch N:") and whether the
    # script counts epochs from 0 (Lightning) or 1, learnt from the first epoch label it prints.
    epochs_done: float | None = None
    epoch_base: int | None = None
    # "step d/t" as printed, and whether it restarts every epoch (seen going down while the total stayed).
    step_seen: int | None = None
    steps_per_epoch_seen: int | None = None
    per_epoch_steps: bool = False
    step_epoch: float | None = None
    # The run's own bar over all its steps was seen (Hugging Face Trainer): its count is the global step.
    bar_steps: bool = False
    # The first step or epoch marker was seen (or a value changed): a value first printed after it is a metric.
    started: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _TRACK_FIELDS}

    def load(self, data: dict[str, Any]) -> None:
        for k in _TRACK_FIELDS:
            if k in data:
                setattr(self, k, data[k])

    def epoch_fraction(self, n: int, m: int) -> None:
        """``Epoch n/m``."""
        if n <= MAX_EPOCHS and m <= MAX_EPOCHS:
            if n == 0 and self.epoch_base is None:
                self.epoch_base = 0
            self.epoch, self.total_epochs = n, m or None

    def step_fraction(self, d: int, t: int) -> None:
        """``Step d/t``: the run's steps, or (once they restart) the steps of the current epoch."""
        if (self.step_seen is not None and d < self.step_seen and t == self.steps_per_epoch_seen
                and self.epoch is not None and self.epoch != self.step_epoch):
            self.per_epoch_steps = True
        self.step_seen, self.steps_per_epoch_seen, self.step_epoch = d, t, self.epoch
        if self.per_epoch_steps and t:
            done_epochs = max(0, int(self.epoch or 1) - (1 if self.epoch_base is None else self.epoch_base))
            self.step = done_epochs * t + d
            self.total_steps = t * self.total_epochs if self.total_epochs else None
        else:
            self.step, self.total_steps = d, t or None

    def epoch_bar(self, label: int, label_total: int | None, done: int, total: int) -> None:
        """A bar per epoch under ``Epoch N:`` / ``Epoch N/M:``: Lightning counts from 0, tqdm loops mostly from 1."""
        if self.epoch_base is None:
            self.epoch_base = 0 if label == 0 else 1
        index = max(0, label - self.epoch_base)
        self.epochs_done = index + done / total
        self.epoch = index + 1
        self.step = index * total + done
        if label_total:
            self.total_epochs = label_total + 1 - self.epoch_base

    def rich_bar(self, label: int, last: int, done: int, total: int) -> None:
        """Lightning's Rich bar, ``Epoch 3/3 ━━━ 20/20``: 0-based, and the total is the last epoch's number."""
        self.epoch_base = 0
        self.epochs_done = label + done / total
        self.epoch, self.total_epochs = label + 1, last + 1
        self.step = label * total + done

    def progress(self, planned_epochs: int | None = None) -> float | None:
        """Fraction done: steps when the script reports a step total, else epochs (``Epoch 3/10`` = 2 done)."""
        if self.step is not None and self.total_steps and (self.bar_steps or not self.total_epochs
                                                           or self.per_epoch_steps):
            return min(1.0, self.step / self.total_steps)
        total = self.total_epochs or planned_epochs
        if self.epochs_done is not None and total:
            return min(1.0, max(0.0, self.epochs_done / total))
        if self.epoch is not None and total:
            done = self.epoch - (1 if self.epoch_base is None else self.epoch_base)
            if self.step_seen is not None and self.steps_per_epoch_seen and self.step_epoch == self.epoch:
                done += self.step_seen / self.steps_per_epoch_seen  # "Epoch 3/3" then "step 10/10": all done
            return min(1.0, max(0.0, done / total))
        return None


@dataclass
class ParserState(Track):
    """The first rank's track (the job's progress), the other ranks' tracks, and what crosses a chunk boundary."""

    counters: dict[str, int] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    # (time, progress fraction) whenever progress moved: the ETA's input.
    marks: list[list[float]] = field(default_factory=list)
    ranks: dict[str, Track] = field(default_factory=dict)
    # The unfinished last line of the previous chunk (read again with the next one), the last figure per key
    # on a bar (a bar redrawn with the same figure is one point), and Trainer dicts waiting for the bar's step.
    pending: bytes = b""
    seen: dict[str, float] = field(default_factory=dict)
    deferred: list[list[Any]] = field(default_factory=list)
    # Values printed before the first step ("lr=0.02 epochs=12"): configuration, unless printed again later. Per
    # name ("name@rank" for another rank's): its points [x, epoch, value], charted only once it is printed again.
    held: dict[str, list[list[Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(counters=self.counters, latest=self.latest, marks=self.marks,
                   ranks={r: t.to_json() for r, t in self.ranks.items()},
                   pending=base64.b64encode(self.pending).decode("ascii"), seen=self.seen, deferred=self.deferred,
                   held=self.held)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ParserState:
        data = data or {}
        st = cls(counters=dict(data.get("counters") or {}), latest=dict(data.get("latest") or {}),
                 marks=[list(m) for m in data.get("marks") or []], seen=dict(data.get("seen") or {}),
                 deferred=[list(d) for d in data.get("deferred") or []],
                 pending=base64.b64decode(data.get("pending") or ""),
                 held={k: [list(p) for p in v] for k, v in (data.get("held") or {}).items()})
        st.load(data)
        if "started" not in data:  # a state saved before this rule: a run that has values is under way
            st.started = bool(st.latest)
        for rank, track in (data.get("ranks") or {}).items():
            st.ranks[rank] = t = Track()
            t.load(track)
            if "started" not in track:
                t.started = st.started
        return st

    def track(self, rank: int | None) -> Track:
        if not rank:
            return self
        key = str(rank)
        t = self.ranks.get(key)
        if t is None:
            t = self.ranks[key] = Track()
        return t


def printed_at_start(state: dict[str, Any] | None) -> dict[str, float]:
    """The values a job printed once before its first step (its first rank's), from its stored state: they are
    its configuration ("lr=0.02 epochs=12"), shown with its parameters rather than as charts."""
    held = (state or {}).get("held") or {}
    return {name: points[-1][2] for name, points in held.items() if "@" not in name and points}


def eta_seconds(marks: list[list[float]], now: float) -> float | None:
    """Seconds left from the recent rate of progress; None ("unknown") until there is a rate.

    The very first interval (start-up, data loading, compilation) is left out once later ones exist,
    so a slow first epoch does not inflate the estimate.
    """
    if len(marks) < 2:
        return None
    window = marks[-6:]
    if len(marks) >= 3 and len(window) == len(marks):
        window = window[1:]
    (t0, p0), (t1, p1) = window[0], window[-1]
    if t1 <= t0 or p1 <= p0:
        return None
    rate = (p1 - p0) / (t1 - t0)
    remaining = (1.0 - p1) / rate - max(0.0, now - t1)
    return max(0.0, remaining) if math.isfinite(remaining) else None
