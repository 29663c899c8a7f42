"""Metrics from log text, without changes to the training script.

Understood, per line:
- the portal's JSON-line protocol: ``##portal {"loss": 0.42, "step": 100}`` (see docs/scripts.md);
- progress: ``Epoch 47/100``, ``Epoch [3/10]``, ``Step 200/5000``;
- ``key=value`` and ``key: value`` pairs: ``Loss: 0.342``, ``val acc=0.91``, ``'loss': 0.3``.

Speed matters (logs of millions of lines), and a regex tried at every position of the text is slow in
CPython. So the text is scanned the other way round: numpy finds every ``:`` and ``=`` at once, checks
in bulk that a number follows and a word precedes, and Python only touches real hits. Progress lines
and protocol lines are found by regexes that start with a literal, which the engine skips to quickly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

PROTOCOL_PREFIX = "##portal "

_NUMBER = re.compile(rb"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan\b|inf\b")
# To the end of the line in one step; the closing brace is found afterwards (a pattern ending in "\}" rescans
# the rest of the line for every "##portal {" on it, quadratic on a long line).
_PROTOCOL = re.compile(rb"##portal[ \t]+(\{[^\n\r]*)")
# "Epoch 3/10", "epoch [3/10]", "Step 200/5000", "Iteration 5/100": found by their literal middle part.
# Written so that no two runs of blanks meet around an optional part: on a line of 40,000 spaces that
# backtracks quadratically (minutes); like this every pattern stays linear.
_FRACTION_TAIL = rb"[ \t]*(?:[:#][ \t]*)?\[?(\d{1,15})[ \t]*/[ \t]*(\d{1,15})\b"
# Two patterns that each start with a literal ("poch", "te"), which the engine finds by fast search:
# one alternation at the front would be tried at every byte of the log.
_FRACTIONS = (re.compile(rb"(poch)" + _FRACTION_TAIL), re.compile(rb"te(p|ration|r)" + _FRACTION_TAIL))
_FRACTION_HEAD = {b"poch": (b"Ee", "epoch", 0), b"p": (b"Ss", "step", 2), b"ration": (b"Ii", "step", 2),
                  b"r": (b"Ii", "step", 2)}

def _table(chars: bytes) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[np.frombuffer(chars, dtype=np.uint8)] = True
    return t


_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_CHAR = _table(_LETTERS + b"0123456789_./-")
_KEY_START = _table(_LETTERS)
_VALUE_START = _table(b"0123456789+-.ni")
_NUM_CHAR = _table(b"0123456789.eE+-")
_DIGIT = _table(b"0123456789")
# The low b bytes of a little-endian word, and the odd multiplier that mixes a key's words into one number.
_BYTE_MASKS = np.asarray([(1 << (8 * b)) - 1 for b in range(9)], dtype=np.uint64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BLANK = _table(b" \t")
_QUOTE = _table(b"'\"")

_STEP_KEYS = frozenset({"step", "global_step", "iteration", "iter"})
_IGNORED_KEYS = frozenset(
    {"http", "https", "localhost", "pid", "port", "master_port", "rank", "local_rank", "world_size",
     # Lightning's banner and bar, torchrun's failure report: numbers, but not training metrics.
     "v_num", "exitcode", "total_params", "trainable_params", "non-trainable_params", "total_flops", "eval_mode",
     "train_mode", "using", "max_epochs", "error_file", "timestamp"}
)
# torchrun --tee prefixes every line with its rank: "[default1]:", and a worker's own "[rank1]:".
# Patterns start with a literal, which the regex engine jumps to; the line-start check is done after.
_RANK_PREFIX = re.compile(rb"\[(?:default|rank)(\d{1,5})\]:")
# A tqdm bar's count, "%|████  | 13/60 [", and what precedes it on its line: a percentage, maybe after "Epoch N:".
_BAR = re.compile(rb"%\|[^|\r\n]{0,60}\|[ \t]*(\d{1,15})/(\d{1,15})[ \t]*\[")
_BAR_HEAD = re.compile(rb"(?:\[\w{1,20}\]:)?[ \t]*(?:Epoch[ \t]+(\d{1,7}):[ \t]*)?\d{1,3}")
_FILLER_WORDS = frozenset(
    {"the", "a", "an", "is", "was", "has", "have", "of", "at", "to", "and", "with", "in", "on", "for", "from", "by"}
)
MAX_KEY_LEN = 64
# Steps, epochs and totals beyond this are not progress (and would not fit the store's 64-bit columns).
MAX_COUNT = 10**15
MAX_EPOCHS = 10**6
MAX_RANK = 100_000
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
    # Fractional epochs done (HF Trainer's 'epoch': 0.25, or a bar under "Epoch N:") and whether the
    # script counts epochs from 0 (Lightning) or 1, learnt from the first "Epoch N:" it prints.
    epochs_done: float | None = None
    epoch_base: int | None = None
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
            "epochs_done": self.epochs_done,
            "epoch_base": self.epoch_base,
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
            epochs_done=data.get("epochs_done"),
            epoch_base=data.get("epoch_base"),
        )

    def progress(self, planned_epochs: int | None = None) -> float | None:
        """Fraction done: steps when the script reports a step total, else epochs (``Epoch 3/10`` = 2 done)."""
        if self.step is not None and self.total_steps:
            return min(1.0, self.step / self.total_steps)
        total = self.total_epochs or planned_epochs
        if self.epochs_done is not None and total:
            return min(1.0, max(0.0, self.epochs_done / total))
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

    def feed(self, data: bytes | str, now: float) -> list[Point]:
        if isinstance(data, str):
            data = data.encode("utf-8", errors="replace")
        points: list[Point] = []
        st = self.state
        progress_before = st.progress()
        a = np.frombuffer(data, dtype=np.uint8)
        # Control characters are rare: find them all, then keep the line breaks (6x faster than two masks).
        low = np.flatnonzero(a <= 13)
        breaks = low[(a[low] == 10) | (a[low] == 13)]
        # A line that ends in a bare carriage return is a progress-bar redraw, overdrawn by the next one.
        nxt = np.minimum(breaks + 1, max(len(a) - 1, 0))
        redraws = np.append((a[breaks] == 13) & ((breaks + 1 >= len(a)) | (a[nxt] != 10)), False)
        json_lines = _protocol_lines(data, breaks)
        ranks = _line_ranks(data, breaks)
        pairs = _pairs(data, a, breaks, {line for _pos, line, _raw in json_lines}, None if ranks else redraws)
        events = _specials(data, breaks, json_lines)
        redraw_list = redraws.tolist()
        rank_of = ranks.get
        emit, event = self._emit, self._event
        ev_pos = [e[1] for e in events]
        ei, n_events = 0, len(events)
        line_kv: list[tuple[str, float]] = []
        current_line = -1
        for line, pos, key, value in pairs:
            while ei < n_events and ev_pos[ei] < pos:
                if line_kv:
                    emit(line_kv, points, rank_of(current_line), redraw_list[current_line])
                    line_kv = []
                event(events[ei], points, ranks)
                ei += 1
            if line != current_line:
                if line_kv:
                    emit(line_kv, points, rank_of(current_line), redraw_list[current_line])
                    line_kv = []
                current_line = line
            line_kv.append((key, value))
        if line_kv:
            emit(line_kv, points, rank_of(current_line), redraw_list[current_line])
        for ev in events[ei:]:
            event(ev, points, ranks)

        progress_after = st.progress()
        if progress_after is not None and progress_after != progress_before:
            st.marks.append([now, progress_after])
            del st.marks[:-MARKS_KEPT]
        return points

    def _event(self, ev: tuple[str, int, int, Any], points: list[Point], ranks: dict[int, int]) -> None:
        kind, _pos, line, value = ev
        st = self.state
        if kind == "json":
            self._json_line(value, points)
            return
        if ranks.get(line, 0) != 0:
            return  # the job's progress is its first rank's; the others' metrics are kept per rank
        if kind == "epoch":
            if value[0] <= MAX_EPOCHS and value[1] <= MAX_EPOCHS:
                st.epoch, st.total_epochs = value[0], value[1] or None
        elif kind == "bar":
            label, done, total = value
            if label is None:  # one bar over the whole run (Hugging Face Trainer): steps
                # A shorter nested bar (the Trainer's evaluation) must not reset the run's progress.
                if total and total >= (st.total_steps or 0):
                    st.step, st.total_steps = done, total
            elif total and label <= MAX_EPOCHS:  # a bar per epoch under "Epoch N:" (Lightning counts from 0)
                if st.epoch_base is None:
                    st.epoch_base = 0 if label == 0 else 1
                st.epochs_done = max(0, label - st.epoch_base) + done / total
                st.epoch = max(1, label - st.epoch_base + 1)
        else:
            st.step, st.total_steps = value[0], value[1] or None

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
        self._emit(kv, points, rank if valid_rank else None)

    def _emit(self, kv: list[tuple[str, float]], points: list[Point], rank: int | None,
              redraw: bool = False) -> None:
        st = self.state
        metrics: list[tuple[str, float]] = []
        if rank:
            self._emit_rank(kv, points, rank)
            return
        for key, value in kv:
            if key == "epoch":
                if not (math.isfinite(value) and 0 <= value <= MAX_EPOCHS):
                    continue
                if value != int(value):  # epochs done so far, as the HF Trainer logs them
                    st.epochs_done = value
                    st.epoch = max(1, math.ceil(value))
                else:
                    st.epoch = value
            elif key in _STEP_KEYS:
                if math.isfinite(value) and 0 <= value <= MAX_COUNT:
                    st.step = int(value)
            else:
                metrics.append((key, value))
        if not metrics:
            return
        epoch = st.epoch
        counters = st.counters
        latest = st.latest
        for key, value in metrics:
            if redraw and latest.get(key) == value:
                continue  # a progress bar redrawn with the same figures: one point, not one per redraw
            latest[key] = value  # a NaN loss is news for the card, though it cannot be a chart point
            if not math.isfinite(value):
                continue
            if st.step is not None:
                x = st.step
            else:
                x = counters.get(key, 0)
                counters[key] = x + 1
            points.append((key, x, epoch, value, rank))


    def _emit_rank(self, kv: list[tuple[str, float]], points: list[Point], rank: int) -> None:
        """Metrics of a rank other than the first: kept as that rank's points, numbered per rank."""
        counters = self.state.counters
        for key, value in kv:
            if key == "epoch" or key in _STEP_KEYS or not math.isfinite(value):
                continue
            slot = f"{key}@{rank}"
            x = counters.get(slot, 0)
            counters[slot] = x + 1
            points.append((key, x, None, value, rank))


def _line_ranks(data: bytes, breaks: np.ndarray) -> dict[int, int]:
    """Line number -> rank, for lines torchrun prefixed with their rank."""
    if b"[default" not in data and b"[rank" not in data:
        return {}
    hits = [(m.start(), int(m.group(1))) for m in _RANK_PREFIX.finditer(data)
            if m.start() == 0 or data[m.start() - 1] in (10, 13)]
    if not hits:
        return {}
    lines = np.searchsorted(breaks, np.asarray([h[0] for h in hits], dtype=np.int64)).tolist()
    return {line: rank for line, (_pos, rank) in zip(lines, hits, strict=True)}


def _protocol_lines(data: bytes, breaks: np.ndarray) -> list[tuple[int, int, bytes]]:
    """The JSON-protocol lines: (position, line number, JSON text)."""
    found: list[tuple[int, int, bytes]] = []
    if b"##portal" in data:
        hits = []
        for m in _PROTOCOL.finditer(data):
            body = m.group(1)
            end = body.rfind(b"}")
            if end >= 0:
                hits.append((m.start(), body[: end + 1]))
        at = np.asarray([h[0] for h in hits], dtype=np.int64)
        line_arr = np.searchsorted(breaks, at)
        lines = line_arr.tolist()
        # Where each hit's line starts (just after the previous line break).
        starts = (breaks[line_arr - 1] + 1).tolist() if len(breaks) else [0] * len(hits)
        starts = [st if ln > 0 else 0 for st, ln in zip(starts, lines, strict=True)]
        for (pos, raw), line, line_start in zip(hits, lines, starts, strict=True):
            if line_start == pos or not data[line_start:pos].strip():  # the prefix opens the line
                found.append((pos, line, raw))
    return found


def _specials(data: bytes, breaks: np.ndarray,
              json_lines: list[tuple[int, int, bytes]]) -> list[tuple[str, int, int, Any]]:
    """Protocol lines and progress fractions, in text order: (kind, position, line number, value)."""
    found: list[tuple[str, int, int, Any]] = [("json", pos, line, raw) for pos, line, raw in json_lines]
    fractions: list[tuple[str, int, tuple[int, int]]] = []
    for pattern in _FRACTIONS:
        for m in pattern.finditer(data):
            head, kind, _ = _FRACTION_HEAD[m.group(1)]
            at = m.start() - 1
            # The word must be whole: "Epoch", not "Reepoch"; "Step", not "Steps"-like prefixes of others.
            if at < 0 or data[at] not in head or (at > 0 and _KEY_CHAR[data[at - 1]]):
                continue
            fractions.append((kind, at, (int(m.group(2)), int(m.group(3)))))
    if fractions:  # a text without a line break is line 0, whose rank prefix counts like any other line's
        lines = np.searchsorted(breaks, np.asarray([f[1] for f in fractions], dtype=np.int64)).tolist()
        found += [(kind, at, line, value) for (kind, at, value), line in zip(fractions, lines, strict=True)]
    if b"%|" in data:
        found += _bars(data, breaks)
    found.sort(key=itemgetter(1))
    return found


def _bars(data: bytes, breaks: np.ndarray) -> list[tuple[str, int, int, Any]]:
    """tqdm bars as ("bar", line start, line number, (epoch label or None, done, total))."""
    head = _BAR_HEAD.fullmatch
    bars = [(m.start(), m.end(), m.group(1), m.group(2)) for m in _BAR.finditer(data)]
    if not bars:
        return []
    pos = np.fromiter((b[0] for b in bars), dtype=np.int64, count=len(bars))
    line = np.searchsorted(breaks, pos)
    start = np.where(line > 0, breaks[np.maximum(line - 1, 0)] + 1, 0) if len(breaks) else np.zeros_like(pos)
    # Farther in than that is not a progress bar's own line (and no copy of a huge line per bar).
    near = np.flatnonzero(pos - start <= 200).tolist()
    starts, lines = start.tolist(), line.tolist()
    found: list[tuple[str, int, int, Any]] = []
    previous = b""
    for i in near:
        at, end, done, total = bars[i]
        begin = starts[i]
        # A redraw that shows the same bar state as the one before it changes nothing.
        shown = data[begin:end]
        if shown == previous:
            continue
        previous = shown
        h = head(data, begin, at)
        if h is None:
            continue  # "Validation DataLoader 0: 75%|", "Sanity Checking": not the run's own bar
        label = h.group(1)
        found.append(("bar", begin, lines[i], (None if label is None else int(label), int(done), int(total))))
    return found


def _pairs(data: bytes, a: np.ndarray, breaks: np.ndarray, skip_lines: set[int],
           redraws: np.ndarray | None = None) -> list[tuple[int, int, str, float]]:
    """Every ``key: number`` / ``key=number`` pair as (line number, position, key, value), in text order.
    With `redraws` (per line), a pair on a redrawn bar that repeats the value just seen is left out early."""
    n = len(a)
    if n == 0:
        return []
    is_sep = a == 58  # ':'
    is_sep |= a == 61  # '='
    seps = np.flatnonzero(is_sep)
    if len(seps) == 0:
        return []
    # The value: a number after at most two blanks.
    v = seps + 1
    for _ in range(2):
        inside = v < n
        v = v + (inside & _BLANK[a[np.minimum(v, n - 1)]])
    v = v + ((v < n) & _QUOTE[a[np.minimum(v, n - 1)]])  # 'loss': '0.69' (transformers 5 quotes its values)
    ok = (v < n) & _VALUE_START[a[np.minimum(v, n - 1)]]
    # The key: a word right before (blanks and one quote allowed in between), starting with a letter.
    k = seps - 1
    for _ in range(2):
        k = k - ((k >= 0) & _BLANK[a[np.maximum(k, 0)]])
    k = k - ((k >= 0) & _QUOTE[a[np.maximum(k, 0)]])
    ok &= (k >= 0) & _KEY_CHAR[a[np.maximum(k, 0)]]
    seps, v, k = seps[ok], v[ok], k[ok]
    if len(seps) == 0:
        return []
    start = _word_start(a, k)
    # Two-word keys ("val acc", "Gradient norm"): one space, and a word before it that starts with a letter.
    prev_sp = start - 1
    two = (prev_sp > 0) & (a[np.maximum(prev_sp, 0)] == 32)
    spaced = np.flatnonzero(two)  # only these can have a word before: the walk back is done for them alone
    prev_start = start.copy()
    prev_start[spaced] = _word_start(a, prev_sp[spaced] - 1)
    two &= (prev_start < prev_sp) & _KEY_START[a[np.minimum(prev_start, n - 1)]]
    ok = _KEY_START[a[np.minimum(start, n - 1)]]
    start = np.where(two & ok, prev_start, start)
    seps, v, k, start = seps[ok], v[ok], k[ok], start[ok]
    lines = np.searchsorted(breaks, seps)
    # Where each number ends (a run of digits, '.', 'e', signs), found for all at once, and whether it is all
    # digits; float() then reads it, and only what float() refuses ("nan", "1.2.3", a date) goes through the regex.
    ve = v.copy()
    digits = np.ones(len(v), dtype=bool)
    live = np.arange(len(v))
    for _ in range(40):
        if not live.size:
            break
        c = a[np.minimum(ve[live], n - 1)]
        step = (ve[live] < n) & _NUM_CHAR[c]
        digits[live[step & ~_DIGIT[c]]] = False
        live = live[step]
        ve[live] += 1
    digits &= ve > v
    # Keys are named once per distinct spelling; pairs whose key is no metric are dropped here, in bulk.
    ids, names = _key_names(a, start, k + 1)
    keep = np.asarray([name is not None for name in names], dtype=bool)[ids]
    if skip_lines:
        keep &= ~np.isin(lines, np.fromiter(skip_lines, dtype=np.int64, count=len(skip_lines)))
    # An all-digit value after a dotted key or right after a colon is a host:port or a clock time, not a metric.
    dotted = np.asarray(["." in name if name else False for name in names], dtype=bool)
    port_like = dotted[ids] | ((a[seps] == 58) & (v == seps + 1))
    idx = np.flatnonzero(keep)
    lines, seps, v, ve, ids, digits, port_like = (x[idx] for x in (lines, seps, v, ve, ids, digits, port_like))

    out: list[tuple[int, int, str, float]] = []
    number = _NUMBER.match
    seen: dict[str, bytes] = {}
    check_redraw = redraws is not None and bool(redraws.any())
    on_redraw = redraws[lines].tolist() if check_redraw else [False] * len(lines)
    for line, pos, vs, ve_, kid, all_digits, port, redrawn in zip(
        lines.tolist(), seps.tolist(), v.tolist(), ve.tolist(), ids.tolist(), digits.tolist(), port_like.tolist(),
        on_redraw, strict=True,
    ):
        key = names[kid]
        raw = data[vs:ve_]
        try:
            value = float(raw)
        except ValueError:
            m = number(data, vs)
            if m is None:
                continue
            raw = m.group()
            value = float(raw)
            all_digits = raw.isdigit()
        if all_digits and port:
            continue
        if check_redraw:
            if redrawn and seen.get(key) == raw and key != "epoch" and key not in _STEP_KEYS:
                continue  # the same figure on the next redraw of a bar: the point is already taken
            seen[key] = raw
        out.append((line, pos, key, value))
    return out


def _key_names(a: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """A small id per distinct key text [start, end), and each id's normalised name (None: not a metric).

    A key of up to 32 bytes is read as four 8-byte words, so equal texts get equal ids without a Python
    slice per pair; the rare longer key gets an id of its own per occurrence."""
    n = len(a)
    length = end - start
    # Overlapping little-endian words at every byte offset: a view, not a copy.
    words = np.ndarray((max(n - 7, 0),), dtype="<u8", buffer=a, strides=(1,))
    last = len(words) - 1
    own = (length > 32) | (start + 32 > last)  # long keys, and keys at the very end of the text: an id each
    # The first column is the length, or for a key with an id of its own a mark no length can equal.
    own_mark = np.uint64(1 << 63) | np.flatnonzero(own).astype(np.uint64)
    cols = [length.astype(np.uint64)]
    cols[0][own] = own_mark
    for j in range(4):
        if last >= 0:
            cols.append(words[np.clip(start + 8 * j, 0, last)] & _BYTE_MASKS[np.clip(length - 8 * j, 0, 8)])
        else:
            cols.append(np.zeros(len(start), dtype=np.uint64))
    # One number per key text (wrapping multiply-xor); texts that share it are compared column by column.
    mixed = cols[0].copy()
    for col in cols[1:]:
        mixed *= _MIX
        mixed ^= col
    mixed[own] = own_mark
    _, first, ids = np.unique(mixed, return_index=True, return_inverse=True)
    ids = ids.reshape(-1)
    rep = first[ids]
    if not all((col[rep] == col).all() for col in cols):  # two texts met on one number: tell them apart
        _, first, ids = np.unique(np.stack(cols, axis=1), axis=0, return_index=True, return_inverse=True)
        ids = ids.reshape(-1)
    names = [_norm_key(bytes(a[start[i] : end[i]]).decode("ascii")) for i in first.tolist()]
    return ids, names


def _word_start(a: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Where the run of key characters that ends at each `end` begins (end + 1 where there is none).
    Walks back only from the few candidate positions, instead of indexing every non-key byte of the text."""
    cur = end + 1
    live = np.flatnonzero(end >= 0)
    for _ in range(2 * MAX_KEY_LEN + 1):  # a longer word is no key anyway
        if not live.size:
            break
        prev = cur[live] - 1
        step = (prev >= 0) & _KEY_CHAR[a[np.maximum(prev, 0)]]
        live = live[step]
        cur[live] = prev[step]
    return cur


def _is_number(v: Any) -> bool:
    """A JSON number that fits a float (a 400-digit integer would overflow every later use)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, float) or abs(v) < 10**300


def _as_int(v: Any, limit: int = MAX_COUNT) -> int | None:
    return int(v) if _is_number(v) and math.isfinite(v) and 0 < v <= limit else None


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
