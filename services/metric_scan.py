"""Where the metrics are in a chunk of log text: the bulk numpy scan behind `services.metrics`.

A regex tried at every position of the text is slow in CPython. So the text is scanned the other way round:
numpy finds every ``:`` and ``=`` at once, checks in bulk that a number follows and a word precedes, and Python
only touches real hits. Progress lines and protocol lines are found by regexes that start with a literal, which
the engine skips to quickly. Every function here reads whole lines only (the extractor keeps an unfinished last
line for the next chunk), so what it finds never depends on where a read was cut.
"""

from __future__ import annotations

import re
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np

from services.metric_chars import (
    BLANK,
    BYTE_MASKS,
    DIGIT,
    FLOAT_DONE,
    FLOAT_STEP,
    KEY_CHAR,
    KEY_START,
    MIX,
    NUM_CHAR,
    NUM_CLASS,
    QUOTE,
    UNIT,
    UNIT_AFTER_BLANK,
    UNIT_START,
    VALUE_START,
)

_NUMBER = re.compile(rb"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan\b|inf\b")
# A whole number written in thousands ("1,250"), not followed by more digits, a decimal point or a list ("1,128,3").
_GROUPED = re.compile(rb"\d{1,3}(?:,\d{3})+(?![\d.]|,\d)")
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
_BAR_HEAD = re.compile(rb"(?:\[\w{1,20}\]:)?[ \t]*(?:Epoch[ \t]+(\d{1,7})(?:/(\d{1,7}))?:[ \t]*)?\d{1,3}")
# Lightning's Rich bar: "Epoch 3/3  ━━━━━━━━ 20/20 0:00:00" (0-based; a box-drawing bar, no "%|").
_RICH = re.compile(rb"Epoch[ \t]{1,4}(\d{1,7})/(\d{1,7})[ \t]{1,4}(?:\xe2\x94\x81|\xe2\x95[\xb8\xba]){1,200}[ \t]{1,4}"
                   rb"(\d{1,15})/(\d{1,15})\b")
PLAIN, REDRAW, RANKED = 0, 1, 2
# What `pairs` finds, one entry per pair: line numbers and positions (numpy), (key, value), and whether the key
# is 'epoch' or a step (numpy).
Pairs = tuple[np.ndarray, np.ndarray, list[tuple[str, float]], np.ndarray]
_NO_PAIRS: Pairs = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), [], np.zeros(0, dtype=bool))
_FILLER_WORDS = frozenset(
    {"the", "a", "an", "is", "was", "has", "have", "of", "at", "to", "and", "with", "in", "on", "for", "from", "by"}
)
MAX_KEY_LEN = 64


def _norm_key(raw: str) -> str | None:
    words = raw.split(" ")
    if len(words) == 2 and words[0].lower() in _FILLER_WORDS:
        words = words[1:]
    key = "_".join(words).lower().rstrip("./-")
    # "Driver Version: 535.104.05", "CUDA Version: 12.2" (an nvidia-smi banner): versions are no metric.
    if not key or len(key) > MAX_KEY_LEN or key in _IGNORED_KEYS or key.endswith("version"):
        return None
    return key


def line_ranks(data: bytes, breaks: np.ndarray) -> dict[int, int]:
    """Line number -> rank, for lines torchrun prefixed with their rank."""
    if _RANK_PREFIX.search(data) is None:  # the regex finds its "[" by memchr: faster than two `in` scans
        return {}
    hits = [(m.start(), int(m.group(1))) for m in _RANK_PREFIX.finditer(data)
            if m.start() == 0 or data[m.start() - 1] in (10, 13)]
    if not hits:
        return {}
    lines = np.searchsorted(breaks, np.asarray([h[0] for h in hits], dtype=np.int64)).tolist()
    return {line: rank for line, (_pos, rank) in zip(lines, hits, strict=True)}


def protocol_lines(data: bytes, breaks: np.ndarray) -> list[tuple[int, int, bytes]]:
    """The JSON-protocol lines: (position, line number, JSON text)."""
    found: list[tuple[int, int, bytes]] = []
    if _PROTOCOL.search(data) is not None:  # (faster than `in`, as above)
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


def specials(data: bytes, breaks: np.ndarray, json_lines: list[tuple[int, int, bytes]], drawings: BarDrawings | None,
             progress_pairs: np.ndarray) -> list[tuple[str, int, int, Any]]:
    """Protocol lines, progress fractions and bars, in text order: (kind, position, line number, value).
    `drawings`: the tqdm bar drawings (`bar_drawings`); `progress_pairs`: where the pairs with an 'epoch' or step
    key are, in order."""
    found: list[tuple[str, int, int, Any]] = [("json", pos, line, raw) for pos, line, raw in json_lines]
    fractions: list[tuple[str, int, tuple[int, int]]] = []
    for pattern in _FRACTIONS:
        for m in pattern.finditer(data):
            head, kind, _ = _FRACTION_HEAD[m.group(1)]
            at = m.start() - 1
            # The word must be whole: "Epoch", not "Reepoch"; "Step", not "Steps"-like prefixes of others.
            if at < 0 or data[at] not in head or (at > 0 and KEY_CHAR[data[at - 1]]):
                continue
            fractions.append((kind, at, (int(m.group(2)), int(m.group(3)))))
    if fractions:  # a text without a line break is line 0, whose rank prefix counts like any other line's
        lines = np.searchsorted(breaks, np.asarray([f[1] for f in fractions], dtype=np.int64)).tolist()
        found += [(kind, at, line, value) for (kind, at, value), line in zip(fractions, lines, strict=True)]
    if b"\xe2" in data and b"\xe2\x94\x81" in data:  # one byte first: memchr, 50x faster on ASCII
        for m in _RICH.finditer(data):
            line = int(np.searchsorted(breaks, m.start()))
            found.append(("rich", m.start(), line, tuple(int(g) for g in m.groups())))
    if drawings is not None:
        # What may move a track between two drawings of a bar: every event so far, and the progress pairs.
        movers = np.fromiter((e[1] for e in found), dtype=np.int64, count=len(found))
        movers = np.sort(np.concatenate((movers, progress_pairs)))
        repeated: dict[int, tuple[int, int]] = {}
        found += _bars(data, drawings, movers, repeated)
        if repeated:  # an "Epoch n/m:" bar drawn again unchanged: its fraction is no news either
            found = [e for e in found if e[0] != "epoch" or e[2] not in repeated
                     or not repeated[e[2]][0] <= e[1] < repeated[e[2]][1]]
    found.sort(key=itemgetter(1))
    return found


# tqdm bar drawings near their line's start: the matches (start, end, done, total), their line starts, their lines.
BarDrawings = tuple[list[tuple[int, int, bytes, bytes]], list[int], list[int], list[int]]


def bar_drawings(data: bytes, breaks: np.ndarray) -> BarDrawings | None:
    """Every tqdm bar drawing (the indexes of those near their line's start last): their lines are redraws."""
    bars = [(m.start(), m.end(), m.group(1), m.group(2)) for m in _BAR.finditer(data)]
    if not bars:
        return None
    pos = np.fromiter((b[0] for b in bars), dtype=np.int64, count=len(bars))
    line = np.searchsorted(breaks, pos)
    start = np.where(line > 0, breaks[np.maximum(line - 1, 0)] + 1, 0) if len(breaks) else np.zeros_like(pos)
    # Farther in than that is not a progress bar's own line (and no copy of a huge line per bar).
    near = np.flatnonzero(pos - start <= 200)
    return bars, start.tolist(), line.tolist(), near.tolist()


def _bars(data: bytes, drawings: BarDrawings, movers: np.ndarray,
          repeated: dict[int, tuple[int, int]]) -> list[tuple[str, int, int, Any]]:
    """tqdm bars as ("bar", line start, line number, (epoch label or None, label's total or None, done, total)).
    A bar with an "Epoch n/m:" head that is left out as unchanged goes to `repeated`: line -> the head's span."""
    head = _BAR_HEAD.fullmatch
    bars, starts, lines, near = drawings
    found: list[tuple[str, int, int, Any]] = []
    # Whether something that may move a track (`movers`) lies between each drawing and the one before.
    begins = np.asarray([starts[i] for i in near], dtype=np.int64)
    ends = np.asarray([bars[i][1] for i in near], dtype=np.int64)
    moved = (np.searchsorted(movers, begins) > np.searchsorted(movers, np.append(0, ends)[:-1])).tolist()
    append = found.append
    previous, value = b"", None
    for i, moved_since in zip(near, moved, strict=True):
        at, end, done, total = bars[i]
        begin = starts[i]
        # A redraw that shows the same bar state as the one before changes nothing (skipping it only saves time),
        # unless something in between moved the state: a Trainer dict (it takes the redraw's step), a "step=",
        # "epoch=", "Epoch n/m" or Rich bar (the redraw sets the step back, as it would after a cut read there).
        # Then the bar's state is the one read last time (a mixed log redraws it after every dict: no re-reading).
        shown = data[begin:end]
        if shown == previous:
            # ("Epoch n/m:" on the bar itself is a fraction too, read just before it: left out with the bar)
            if value is not None and moved_since:
                append(("bar", begin, lines[i], value))
            elif value is not None and value[1] is not None:
                repeated[lines[i]] = (begin, at)
            continue
        previous = shown
        h = head(data, begin, at)
        if h is None:
            value = None
            continue  # "Validation DataLoader 0: 75%|", "Sanity Checking": not the run's own bar
        label, label_total = h.group(1, 2)
        value = (None if label is None else int(label), None if label_total is None else int(label_total),
                 int(done), int(total))
        append(("bar", begin, lines[i], value))
    return found


def pairs(data: bytes, a: np.ndarray, breaks: np.ndarray, skip_lines: set[int], kinds: np.ndarray,
          seen: dict[str, float]) -> Pairs:
    """Every ``key: number`` / ``key=number`` pair, in text order, as columns (`Pairs`).

    `kinds` per line: REDRAW (a bar, or a line a carriage return overdraws), PLAIN, or RANKED (another rank's).
    A pair on a redraw that repeats the figure its key last had on a redraw (`seen`, kept across chunks) is left out:
    a bar redrawn with the same figures is one point. A value keeps its unit in the key: ``mem=3.2GB`` is
    ``mem (GB)``."""
    n = len(a)
    if n == 0:
        return _NO_PAIRS
    is_sep = a == 58  # ':'
    is_sep |= a == 61  # '='
    seps = np.flatnonzero(is_sep)
    if len(seps) == 0:
        return _NO_PAIRS
    # The value: a number after at most two blanks.
    v = seps + 1
    for _ in range(2):
        inside = v < n
        v = v + (inside & BLANK[a[np.minimum(v, n - 1)]])
    v = v + ((v < n) & QUOTE[a[np.minimum(v, n - 1)]])  # 'loss': '0.69' (transformers 5 quotes its values)
    ok = (v < n) & VALUE_START[a[np.minimum(v, n - 1)]]
    # The key: a word right before (blanks and one quote allowed in between), starting with a letter.
    k = seps - 1
    for _ in range(2):
        k = k - ((k >= 0) & BLANK[a[np.maximum(k, 0)]])
    k = k - ((k >= 0) & QUOTE[a[np.maximum(k, 0)]])
    ok &= (k >= 0) & KEY_CHAR[a[np.maximum(k, 0)]]
    seps, v, k = seps[ok], v[ok], k[ok]
    if len(seps) == 0:
        return _NO_PAIRS
    start = _word_start(a, k)
    # Two-word keys ("val acc", "Gradient norm"): one space, and a word before it that starts with a letter.
    prev_sp = start - 1
    two = (prev_sp > 0) & (a[np.maximum(prev_sp, 0)] == 32)
    spaced = np.flatnonzero(two)  # only these can have a word before: the walk back is done for them alone
    prev_start = start.copy()
    prev_start[spaced] = _word_start(a, prev_sp[spaced] - 1)
    two &= (prev_start < prev_sp) & KEY_START[a[np.minimum(prev_start, n - 1)]]
    ok = KEY_START[a[np.minimum(start, n - 1)]]
    start = np.where(two & ok, prev_start, start)
    seps, v, k, start = seps[ok], v[ok], k[ok], start[ok]
    lines = np.searchsorted(breaks, seps)
    # Where each number ends (a run of digits, '.', 'e', signs), found for all at once, and whether it is all
    # digits; float() then reads it, and only what float() refuses ("nan", "1.2.3", a date) goes through the regex.
    ve = v.copy()
    digits = np.ones(len(v), dtype=bool)
    state = np.zeros(len(v), dtype=np.int8)  # where each number's spelling stands (FLOAT_STEP)
    live = np.arange(len(v))
    for _ in range(40):
        if not live.size:
            break
        c = a[np.minimum(ve[live], n - 1)]
        step = (ve[live] < n) & NUM_CHAR[c]
        digits[live[step & ~DIGIT[c]]] = False
        live = live[step]
        state[live] = FLOAT_STEP[state[live], NUM_CLASS[c[step]]]
        ve[live] += 1
    digits &= ve > v
    # Keys are named once per distinct spelling; pairs whose key is no metric are dropped here, in bulk.
    ids, names = _key_names(a, start, k + 1)
    keep = np.asarray([name is not None for name in names], dtype=bool)[ids]
    # A key in backticks is code in a sentence ("to `num_workers=7` in the `DataLoader`"), not a figure.
    keep &= ~((start > 0) & (a[np.maximum(start - 1, 0)] == 96))
    if skip_lines:
        keep &= ~np.isin(lines, np.fromiter(skip_lines, dtype=np.int64, count=len(skip_lines)))
    # An all-digit value after a dotted key or right after a colon is a host:port or a clock time, not a metric.
    dotted = np.asarray(["." in name if name else False for name in names], dtype=bool)
    port_like = dotted[ids] | ((a[seps] == 58) & (v == seps + 1))
    # An all-digit value there is dropped right here (float() reads any all-digit text, so nothing later could
    # change that).
    idx = np.flatnonzero(keep & ~(digits & port_like))
    lines, seps, v, ve, ids, port_like, state, digits = (
        x[idx] for x in (lines, seps, v, ve, ids, port_like, state, digits))
    # "tokens=12,345", Hugging Face's "Num examples = 1,000": digits in groups of three are one figure, not 12.
    grouped: dict[int, float] = {}
    comma = digits & (ve + 1 < n) & (a[np.minimum(ve, n - 1)] == 44) & DIGIT[a[np.minimum(ve + 1, n - 1)]]
    for i in np.flatnonzero(comma).tolist():
        m = _GROUPED.match(data, int(v[i]))
        if m is not None:
            ve[i], grouped[i] = m.end(), float(m.group().replace(b",", b""))
    # A unit may follow right after the number ("3.2GB", "12ms", "91%"), or a longer one after a blank ("3.2 GB").
    after = a[np.minimum(ve, n - 1)]
    unit_next = (ve < n) & (UNIT_START[after] | ((after == 32) & UNIT_AFTER_BLANK[a[np.minimum(ve + 1, n - 1)]]))

    # Python touches each pair once, in bulk (float() over a list); the few exceptions are patched afterwards.
    vs_l, ve_l = v.tolist(), ve.tolist()
    raws = list(map(data.__getitem__, map(slice, vs_l, ve_l)))
    odd = np.flatnonzero(~FLOAT_DONE[state]).tolist()
    for i in [*odd, *grouped]:
        raws[i] = b"0"
    values = list(map(float, raws))
    for i, value in grouped.items():
        values[i] = value
    keys = np.asarray(names, dtype=object)[ids].tolist()
    # Pairs whose key moves progress rather than being a point (a unit after it changes nothing here).
    progress = np.asarray([name == "epoch" or name in _STEP_KEYS for name in names], dtype=bool)[ids]
    dropped = np.zeros(len(values), dtype=bool)
    number = _NUMBER.match
    for i in odd:  # what float() refuses ("nan", "1.2.3", a date) is read by the regex
        raw = data[vs_l[i]:ve_l[i]]
        m = number(data, vs_l[i])
        if m is None or raw.count(b".") > 1:  # "535.104.05" is a version, not a figure
            dropped[i] = True
            continue
        raw = m.group()
        values[i] = float(raw)
        unit_next[i] = False
        dropped[i] = raw.isdigit() and bool(port_like[i])
    unit_at = UNIT.match
    for i in np.flatnonzero(unit_next & ~dropped).tolist():
        u = unit_at(data, ve_l[i])
        if u is not None:  # the name with its unit must still fit the store's name column (MAX_KEY_LEN)
            unit = f" ({(u.group(1) or u.group(2)).decode()})"
            keys[i] = keys[i][: MAX_KEY_LEN - len(unit)] + unit
    # "1.670" and "1.67" are one figure (Lightning pads some, not others). Only redraws read and write `seen`,
    # so they are walked on their own, in text order.
    for i in np.flatnonzero((kinds[lines] == REDRAW) & ~dropped).tolist():
        key, value = keys[i], values[i]
        if seen.get(key) == value and key != "epoch" and key not in _STEP_KEYS:
            dropped[i] = True  # the same figure on the next redraw of a bar: the point is already taken
        else:
            seen[key] = value
    kv = list(zip(keys, values, strict=True))
    if dropped.any():
        kept = ~dropped
        return lines[kept], seps[kept], list(compress(kv, kept.tolist())), progress[kept]
    return lines, seps, kv, progress


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
            cols.append(words[np.clip(start + 8 * j, 0, last)] & BYTE_MASKS[np.clip(length - 8 * j, 0, 8)])
        else:
            cols.append(np.zeros(len(start), dtype=np.uint64))
    # One number per key text (wrapping multiply-xor); texts that share it are compared column by column.
    mixed = cols[0].copy()
    for col in cols[1:]:
        mixed *= MIX
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
        step = (prev >= 0) & KEY_CHAR[a[np.maximum(prev, 0)]]
        live = live[step]
        cur[live] = prev[step]
    return cur


