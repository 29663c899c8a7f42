"""Byte tables for the bulk metric scan (services/metric_scan.py): which bytes may start or continue a key, a
value or a unit (and the units themselves), and the states of a float's spelling, looked up for every candidate
at once with numpy."""

from __future__ import annotations

import re

import numpy as np


def _table(chars: bytes) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[np.frombuffer(chars, dtype=np.uint8)] = True
    return t


_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_CHAR = _table(_LETTERS + b"0123456789_./-")
KEY_START = _table(_LETTERS)
VALUE_START = _table(b"0123456789+-.ni")
NUM_CHAR = _table(b"0123456789.eE+-")
DIGIT = _table(b"0123456789")
# The spelling of a float, one character at a time: class 0 a digit, 1 '.', 2 'e'/'E', 3 a sign. States: 0 start,
# 1 a sign, 2 digits, 3 '.' before any digit, 4 digits after '.', 5 'e', 6 the exponent's sign, 7 its digits,
# 8 no float. A text that ends in 2, 4 or 7 is one float() reads; any other goes the slow way.
NUM_CLASS = np.zeros(256, dtype=np.int8)
NUM_CLASS[np.frombuffer(b".eE+-", dtype=np.uint8)] = [1, 2, 2, 3, 3]
FLOAT_STEP = np.asarray([[2, 3, 8, 1], [2, 3, 8, 8], [2, 4, 5, 8], [4, 8, 8, 8], [4, 8, 5, 8], [7, 8, 8, 6],
                          [7, 8, 8, 8], [7, 8, 8, 8], [8, 8, 8, 8]], dtype=np.int8)
FLOAT_DONE = np.isin(np.arange(9), [2, 4, 7])
# The low b bytes of a little-endian word, and the odd multiplier that mixes a key's words into one number.
BYTE_MASKS = np.asarray([(1 << (8 * b)) - 1 for b in range(9)], dtype=np.uint64)
MIX = np.uint64(0x9E3779B97F4A7C15)
BLANK = _table(b" \t")
QUOTE = _table(b"'\"")
UNIT_START = _table(b"GMKTkmu\xc2itsmhW%")
UNIT_AFTER_BLANK = _table(b"GMKTkmu\xc2its")

# Units kept with a value. Right after the number any of them; after one blank only the longer ones (not "s").
UNITS = rb"GiB|MiB|KiB|TiB|GB|MB|KB|kB|TB|ms|us|\xc2\xb5s|min|it/s|s/it|samples/s|tokens/s|tok/s|MHz|GHz"
UNIT = re.compile(rb"(?:(" + UNITS + rb"|%|s|h|W)| (" + UNITS + rb"))(?![A-Za-z0-9_/])")
