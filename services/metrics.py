"""Metrics from log text, without changes to the training script.

Understood, per line:
- the portal's JSON-line protocol: ``##portal {"loss": 0.42, "step": 100}`` (see docs/scripts.md);
- progress: ``Epoch 47/100``, ``Epoch [3/10]``, ``Step 200/5000``;
- ``key=value`` and ``key: value`` pairs: ``Loss: 0.342``, ``val acc=0.91``, ``'loss': 0.3``.

The whole chunk is scanned by one compiled regex (the scan runs in C); Python only touches hits.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_PREFIX = "##portal "

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(
    r"^\#\#portal[ \t]+(?P<json>\{[^\n\r]*\})"
    r"|\b(?P<ep>[Ee]poch)[ \t]*[:#]?[ \t]*\[?(?P<ep_n>\d+)[ \t]*/[ \t]*(?P<ep_t>\d+)"
    r"|\b(?P<st>[Ss]tep|[Ii]ter(?:ation)?)[ \t]*[:#]?[ \t]*\[?(?P<st_n>\d+)[ \t]*/[ \t]*(?P<st_t>\d+)"
    r"|\b(?P<key>[A-Za-z][\w./-]*(?:[ ][A-Za-z][\w./-]*)?)['\"]?(?P<sep>[ \t]*[:=][ \t]*)"
    r"(?P<val>" + _NUMBER + r"|(?:nan|inf)\b)",
    re.M,
)
_STEP_KEYS = frozenset({"step", "global_step", "iteration", "iter"})
_IGNORED_KEYS = frozenset({"http", "https", "pid", "port", "master_port", "rank", "local_rank", "world_size"})
_FILLER_WORDS = frozenset(
    {"the", "a", "an", "is", "was", "has", "have", "of", "at", "to", "and", "with", "in", "on", "for", "from", "by"}
)
MAX_KEY_LEN = 64
MARKS_KEPT = 8


@dataclass
class ParserState:
    """What the extractor carries from one chunk to the next (stored as JSON between syncs)."""

    epoch: float | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)
    # (time, progress fraction) whenever progress moved: the ETA's input.
    marks: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "step": self.step,
            "total_steps": self.total_steps,
            "counters": self.counters,
            "latest": self.latest,
            "marks": self.marks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ParserState:
        data = data or {}
        return cls(
            epoch=data.get("epoch"),
            total_epochs=data.get("total_epochs"),
            step=data.get("step"),
            total_steps=data.get("total_steps"),
            counters=dict(data.get("counters") or {}),
            latest=dict(data.get("latest") or {}),
            marks=[list(m) for m in data.get("marks") or []],
        )

    def progress(self, planned_epochs: int | None = None) -> float | None:
        """Fraction done: steps when the script reports a step total, else epochs (``Epoch 3/10`` = 2 done)."""
        if self.step is not None and self.total_steps:
            return min(1.0, self.step / self.total_steps)
        total = self.total_epochs or planned_epochs
        if self.epoch is not None and total:
            return min(1.0, max(0.0, (self.epoch - 1) / total))
        return None


# A point: (series name, x step, epoch, value, rank)
Point = tuple[str, int, "float | None", float, "int | None"]


def _norm_key(raw: str) -> str | None:
    words = raw.split(" ")
    if len(words) == 2 and words[0].lower() in _FILLER_WORDS:
        words = words[1:]
    key = "_".join(words).lower().rstrip("./-")
    if not key or len(key) > MAX_KEY_LEN or key in _IGNORED_KEYS:
        return None
    return key


class MetricExtractor:
    """Feeds on log text chunk by chunk; yields metric points and keeps progress state."""

    def __init__(self, state: ParserState | None = None):
        self.state = state or ParserState()

    def feed(self, text: str, now: float) -> list[Point]:
        points: list[Point] = []
        st = self.state
        line_end = -1
        line_kv: list[tuple[str, float]] = []
        progress_before = st.progress()

        for m in _PATTERN.finditer(text):
            start = m.start()
            if start > line_end:
                if line_kv:
                    self._emit(line_kv, points, None)
                    line_kv = []
                line_end = _line_end(text, start)
            kind = m.lastgroup
            if kind == "val":
                key = _norm_key(m.group("key"))
                if key is None:
                    continue
                raw = m.group("val")
                if raw.isdigit() and ("." in key or m.group("sep") == ":"):
                    continue  # host:port or a clock time, not a metric
                line_kv.append((key, float(raw)))
            elif kind == "ep_t":
                st.epoch = int(m.group("ep_n"))
                st.total_epochs = int(m.group("ep_t")) or None
            elif kind == "st_t":
                st.step = int(m.group("st_n"))
                st.total_steps = int(m.group("st_t")) or None
            elif kind == "json":
                self._json_line(m.group("json"), points)
        if line_kv:
            self._emit(line_kv, points, None)

        progress_after = st.progress()
        if progress_after is not None and progress_after != progress_before:
            st.marks.append([now, progress_after])
            del st.marks[:-MARKS_KEPT]
        return points

    def _json_line(self, raw: str, points: list[Point]) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        st = self.state
        rank = obj.pop("rank", None)
        if "total_epochs" in obj:
            st.total_epochs = _as_int(obj.pop("total_epochs"))
        if "total_steps" in obj:
            st.total_steps = _as_int(obj.pop("total_steps"))
        kv = [(str(k)[:MAX_KEY_LEN], float(v)) for k, v in obj.items() if _is_number(v)]
        self._emit(kv, points, rank if isinstance(rank, int) else None)

    def _emit(self, kv: list[tuple[str, float]], points: list[Point], rank: int | None) -> None:
        st = self.state
        metrics: list[tuple[str, float]] = []
        for key, value in kv:
            if key == "epoch":
                st.epoch = value
            elif key in _STEP_KEYS and value == value and not math.isinf(value):
                st.step = int(value)
            else:
                metrics.append((key, value))
        if not metrics:
            return
        epoch = st.epoch
        counters = st.counters
        latest = st.latest
        for key, value in metrics:
            if st.step is not None:
                x = st.step
            else:
                x = counters.get(key, 0)
                counters[key] = x + 1
            latest[key] = value
            points.append((key, x, epoch, value, rank))


def _line_end(text: str, pos: int) -> int:
    """End of the line holding pos; a carriage return (tqdm redraw) also ends a line."""
    nl = text.find("\n", pos)
    if nl < 0:
        nl = len(text)
    cr = text.find("\r", pos, nl)
    return cr if cr >= 0 else nl


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _as_int(v: Any) -> int | None:
    return int(v) if _is_number(v) and v > 0 else None


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
    return max(0.0, remaining)
