"""Alerts while a job runs, each said once per job: a log line matching the owner's regular expression (for example
`CUDA out of memory|nan`), and a metric crossing one of the owner's rules (`loss > 10, loss is nan`).

The sync loop calls `scan` in the transaction that advances the job's log cursor, so an alert is recorded exactly
with the bytes that caused it: a portal that dies before that commit reads the bytes again, one that dies after
has the alert in its outbox. The notification's key makes it once per job, not per line.

A user's pattern runs inside the sync loop on every job's new log lines, so it must not backtrack without end:
patterns with a repeat inside a repeat (`(a+)+`), alternatives under a repeat (`(a|aa)*`) or back-references are
refused at save time with a sentence, and each line is searched in its first MAX_LINE characters. Open repeats
side by side (`.*a.*Z`) cost the line's length to the power of their number plus one: a pattern holds at most
MAX_OPEN_REPEATS of them, and one with two is searched in a line's first MAX_LINE_TWO_REPEATS characters."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.history_metric_filter import OPERATOR_LIST, parse_metric_filter
from services.notifications_outbox import job_facts, record
from services.store.notification_tables import Notification, NotificationSettings
from services.store.orm import Job

try:  # the parser re.compile itself uses (public as sre_parse before Python 3.11)
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

LOG_MATCH, METRIC_THRESHOLD = "log_match", "metric_threshold"
ALERT_EVENTS = (LOG_MATCH, METRIC_THRESHOLD)
MAX_PATTERN = 200
MAX_LINE = 1000
MAX_OPEN_REPEATS = 2
MAX_LINE_TWO_REPEATS = 200  # (200 characters)^3 steps: milliseconds a line, where 1000 take a second
MAX_RULES = 8
SHOWN_LINE = 300
_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)} - {None}
_RULE_SPLIT = re.compile(r"\s*(?:,|;|\n|\s+or\s+|\|\|)\s*", re.IGNORECASE)
_NAN_RULE = re.compile(r"^(?P<name>[^\s<>=!]+)\s+(?:is|=|==)\s+(?P<what>nan|inf|infinite|not finite)$",
                       re.IGNORECASE)


def _risky(items: Any, in_repeat: bool) -> str | None:
    """What in a parsed pattern could backtrack without end, or None."""
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            if in_repeat and high != low:
                return "a repeat inside a repeat"
            found = _risky(body, in_repeat or high != low)
            if found:
                return found
        elif op is sre_parse.BRANCH:
            if in_repeat:
                return "alternatives ('|') inside a repeat"
            for branch in arg[1]:
                found = _risky(branch, in_repeat)
                if found:
                    return found
        elif op is sre_parse.SUBPATTERN:
            found = _risky(arg[-1], in_repeat)
            if found:
                return found
        elif op in (sre_parse.GROUPREF, sre_parse.GROUPREF_EXISTS):
            return "a back-reference"
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            found = _risky(arg[1], in_repeat)
            if found:
                return found
    return None


# What the parser or compiler raise for a pattern they refuse (ValueError: '(?a)(?u)', flags that exclude each other)
_UNREADABLE = (re.error, RecursionError, OverflowError, ValueError)


def _open_repeats(items: Any) -> int:
    """How many repeats of a variable count ('*', '+', '{m,n}') a parsed pattern holds, a fixed repeat ('{3}')
    counting its body that many times."""
    count = 0
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            inner = _open_repeats(body)
            count += (1 + inner) if high != low else inner * min(low, 100)
        elif op is sre_parse.BRANCH:
            count += sum(_open_repeats(branch) for branch in arg[1])
        elif op is sre_parse.SUBPATTERN:
            count += _open_repeats(arg[-1])
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            count += _open_repeats(arg[1])
    return count


@lru_cache(maxsize=256)
def _line_limit(pattern: str) -> int:
    """How much of each line the pattern is searched in (0: not at all, a pattern saved before it was refused)."""
    try:
        count = _open_repeats(sre_parse.parse(pattern))
        _compiled(pattern)
    except _UNREADABLE:
        return 0
    return 0 if count > MAX_OPEN_REPEATS else MAX_LINE_TWO_REPEATS if count == MAX_OPEN_REPEATS else MAX_LINE


def pattern_problem(pattern: str) -> str | None:
    """Why a log pattern is refused, or None (checked at save time)."""
    if len(pattern) > MAX_PATTERN:
        return f"a pattern has at most {MAX_PATTERN} characters"
    try:
        parsed = sre_parse.parse(pattern)
        _compiled(pattern)  # some refusals come from the compiler alone ('(?<=a+)': look-behind of no fixed width)
    except _UNREADABLE as exc:
        return f"'{pattern}' is not a regular expression: {exc}"
    risky = _risky(parsed, False)
    if not risky and _open_repeats(parsed) > MAX_OPEN_REPEATS:
        risky = f"more than {MAX_OPEN_REPEATS} repeats ('*', '+', '{{m,n}}')"
    if risky:
        return (f"'{pattern}' holds {risky}, which can take the portal minutes on one long line; write it "
                "without (for example 'CUDA out of memory|loss=nan')")
    return None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    name: str
    op: str  # > >= < <= = != or "nan" (not a finite number)
    value: float = math.nan

    def __str__(self) -> str:
        return f"{self.name} is not a finite number" if self.op == "nan" else f"{self.name} {self.op} {self.value:g}"

    def hit(self, v: float) -> bool:
        if self.op == "nan":
            return not math.isfinite(v)
        if not math.isfinite(v):
            return False
        return {">": v > self.value, ">=": v >= self.value, "<": v < self.value, "<=": v <= self.value,
                "=": v == self.value, "!=": v != self.value}[self.op]


def parse_rules(text: str) -> list[Rule]:
    """`loss > 10, loss is nan` -> rules; a ValueError with a sentence for anything else."""
    parts = [p for p in _RULE_SPLIT.split(text.strip()) if p]
    if len(parts) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} rules")
    rules = []
    for part in parts:
        found = _NAN_RULE.match(part)
        if found:
            rules.append(Rule(found.group("name"), "nan"))
            continue
        try:
            [condition] = parse_metric_filter(part)
        except ValueError as exc:
            raise ValueError(f"{exc} (a rule is 'loss > 10' or 'loss is nan', with {OPERATOR_LIST})") from None
        rules.append(Rule(condition.name, condition.op, condition.value))
    return rules


@lru_cache(maxsize=256)
def _rules(text: str) -> tuple[Rule, ...]:
    try:
        return tuple(parse_rules(text))
    except ValueError:  # saved by an older portal with other rules: nothing to check
        return ()


def _said(s: Session, key: str) -> bool:
    return s.scalar(select(Notification.id).where(Notification.key == key)) is not None


def scan(s: Session, job: Job, data: bytes, points: list[tuple[Any, ...]]) -> None:
    """New log bytes and metric points of a running job: an alert for each rule of its owner they cross first."""
    if not data and not points:
        return
    mine = s.get(NotificationSettings, job.owner)
    if mine is None or not (mine.log_pattern or mine.metric_rules):
        return
    if ((job.request or {}).get("notify") or mine.default_notify) == "never":
        return
    if mine.log_pattern and data and not _said(s, key := f"job:{job.id}:{LOG_MATCH}"):
        limit = _line_limit(mine.log_pattern)  # 0 for one that cannot run: never raised into the cursor's commit
        for line in data.decode("utf-8", "replace").splitlines() if limit else []:
            if _compiled(mine.log_pattern).search(line[:limit]):
                shown = line.strip()[:SHOWN_LINE]
                record(s, job.owner, LOG_MATCH, job_facts(job, LOG_MATCH) | {"line": shown,
                                                                              "pattern": mine.log_pattern},
                       job_id=job.id, key=key)
                break
    if mine.metric_rules and points and not _said(s, key := f"job:{job.id}:{METRIC_THRESHOLD}"):
        rules = _rules(mine.metric_rules)
        for name, step, _epoch, value, _rank in points:
            rule = next((r for r in rules if r.name == name and r.hit(value)), None)
            if rule is not None:
                record(s, job.owner, METRIC_THRESHOLD, job_facts(job, METRIC_THRESHOLD) | {
                    "rule": str(rule), "metric": name, "value": value, "step": step}, job_id=job.id, key=key)
                break
