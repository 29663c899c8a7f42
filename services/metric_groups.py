"""Which metric series belong on one chart: the training and validation series of one quantity (`loss` with
`val_loss`, `train/acc` with `val/acc`, `accuracy` with `eval_accuracy`), each line named by its role."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

TRAIN, VALIDATION = "train", "validation"
# The words that name a role, before or after the quantity, joined by one of "_", "/", "-", ".", " ".
ROLE_WORDS = {"train": TRAIN, "training": TRAIN, "val": VALIDATION, "valid": VALIDATION,
              "validation": VALIDATION, "eval": VALIDATION, "dev": VALIDATION}
_WORDS = "|".join(sorted(ROLE_WORDS, key=len, reverse=True))
_PREFIX = re.compile(rf"^({_WORDS})[_/\-. ](.+)$", re.IGNORECASE)
_SUFFIX = re.compile(rf"^(.+?)[_/\-. ]({_WORDS})$", re.IGNORECASE)


@dataclass(frozen=True)
class MetricGroup:
    """One chart: its title and its lines, legend label -> metric name (train first, then validation)."""

    title: str
    lines: dict[str, str]


def role_of(name: str) -> tuple[str, str]:
    """(quantity, role) of a metric's name: ("loss", "validation") for `val_loss`; a plain name is the training
    series of its own quantity ("loss" -> ("loss", "train"))."""
    for pattern, role_at, base_at in ((_PREFIX, 1, 2), (_SUFFIX, 2, 1)):
        m = pattern.match(name)
        if m and m.group(base_at).lower() not in ROLE_WORDS:
            return m.group(base_at), ROLE_WORDS[m.group(role_at).lower()]
    return name, TRAIN


def group_metrics(axes: Mapping[str, str]) -> list[MetricGroup]:
    """The charts for these series (name -> its x axis, "step" or "epoch"), in the order of the names given.

    A quantity's series share a chart when it has both a training and a validation series on the same x axis;
    every other series keeps a chart of its own, titled and labelled with its name. Where one role has two series
    (Hugging Face's per-step `loss` and final `train_loss`), their labels add the name: "train · train_loss"."""
    by_key: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name, axis in axes.items():
        base, role = role_of(name)
        by_key.setdefault((base, axis), []).append((role, name))
    out: list[MetricGroup] = []
    seen: set[str] = set()
    for name, axis in axes.items():
        if name in seen:
            continue
        base, _ = role_of(name)
        members = by_key[(base, axis)]
        roles = [role for role, _ in members]
        if TRAIN not in roles or VALIDATION not in roles:
            out.append(MetricGroup(name, {name: name}))
            seen.add(name)
            continue
        members = sorted(members, key=lambda m: m[0] != TRAIN)  # stable: train first, each role in given order
        lines = {(role if roles.count(role) == 1 else f"{role} · {member}"): member for role, member in members}
        # A title of its own: a series named like the quantity may sit on another axis, on a chart of its own.
        out.append(MetricGroup(base if base in lines.values() or base not in axes else " / ".join(lines.values()),
                               lines))
        seen.update(lines.values())
    return out
