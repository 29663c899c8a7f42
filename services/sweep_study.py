"""A sweep's Optuna side: the study storage on the portal's own database, the sampler, pruner and search space a
spec asks for, and its trials read straight from Optuna's tables in a portal session (one query per table, the
pages' way, instead of Optuna's per-trial reads)."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from optuna.storages._rdb import models as om
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import Settings
from services.store.db import SQLITE_BUSY_TIMEOUT_MS
from services.sweep_spec import SweepSpec, Value

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

# User attributes the portal keeps on an Optuna trial.
OUTCOME = "portal_outcome"  # "failed" (counts against max_failed) or "stopped" (by hand): both are Optuna FAIL
REASON = "portal_reason"  # the sentence: why it was pruned, failed or stopped
JOB = "portal_job"  # the trial's first job, once submitted
# Early stopping waits for this many finished trials to compare with, and for each trial's first report.
PRUNE_STARTUP_TRIALS = 2


def make_storage(settings: Settings) -> optuna.storages.RDBStorage:
    """Optuna's storage on the portal's database. Its tables come from migration 0022, and the portal's own
    `alembic_version` is not Optuna's to check or stamp, hence both skips."""
    url = settings.sqlalchemy_url
    kwargs: dict[str, Any] = ({"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
                              if url.startswith("sqlite") else {"pool_pre_ping": True})
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True,
                                      skip_table_creation=True)


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """What Optuna samples: every parameter but the fixed ones (a grid samples its lists and integer ranges)."""
    out: dict[str, BaseDistribution] = {}
    for name, p in spec.params.items():
        if p.kind == "fixed":
            continue
        if p.kind == "list" or (spec.method == "grid" and p.grid_values() is not None):
            out[name] = CategoricalDistribution(p.grid_values() or [])  # type: ignore[arg-type]
        elif p.kind == "int":
            out[name] = IntDistribution(int(p.low), int(p.high))  # type: ignore[arg-type]
        else:
            out[name] = FloatDistribution(p.low, p.high, log=p.kind == "loguniform")  # type: ignore[arg-type]
    return out


def sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.method == "grid":
        space = {n: p.grid_values() for n, p in spec.params.items() if p.kind != "fixed"}
        return optuna.samplers.GridSampler(space, seed=seed)  # type: ignore[arg-type]
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec.budget // 4)))


def pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.early_stopping == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=0)
    if spec.early_stopping == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(storage: optuna.storages.RDBStorage, study_name: str, spec: SweepSpec,
               seed: int) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=study_name, direction=spec.direction,
                               sampler=sampler(spec, seed), pruner=pruner(spec), load_if_exists=True)


@dataclass(frozen=True)
class StudyTrial:
    trial_id: int
    number: int
    state: str  # Optuna's TrialState name: RUNNING, COMPLETE, PRUNED, FAIL, WAITING
    params: dict[str, Value] = field(default_factory=dict)
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.state == "FAIL" and self.attrs.get(OUTCOME) != "stopped"

    @property
    def pruned_reason(self) -> str | None:
        return self.attrs.get(REASON) if self.state == "PRUNED" else None


@functools.lru_cache(maxsize=1024)
def _distribution(text: str) -> BaseDistribution:
    """Every trial of a sweep stores the same few distributions: parsed once, not once per trial and parameter."""
    return json_to_distribution(text)


def study_trials(s: Session, study_name: str) -> list[StudyTrial]:
    """The study's trials in number order ([] before the runner has made the study)."""
    return studies_trials(s, [study_name]).get(study_name, [])


def study_states(s: Session, study_name: str) -> list[tuple[str, str | None]]:
    """Each trial's Optuna state and the portal's outcome of a failed one, in number order: a sweep's counts
    without its parameters, values or steps (two small queries)."""
    t, ua, st = om.TrialModel, om.TrialUserAttributeModel, om.StudyModel
    mine = t.study_id == select(st.study_id).where(st.study_name == study_name).scalar_subquery()
    outcomes = {trial_id: json.loads(value) for trial_id, value in s.execute(
        select(ua.trial_id, ua.value_json).join(t, t.trial_id == ua.trial_id).where(mine, ua.key == OUTCOME))}
    return [(state.name, outcomes.get(trial_id))
            for trial_id, state in s.execute(select(t.trial_id, t.state).where(mine).order_by(t.number))]


def studies_trials(s: Session, names: list[str], steps: bool = True) -> dict[str, list[StudyTrial]]:
    """The trials of several studies, one query per Optuna table whatever their number (a listing of sweeps).
    `steps`: with the objective's reported values by step (not needed for a listing's progress and best)."""
    studies = dict(s.execute(select(om.StudyModel.study_id, om.StudyModel.study_name)
                             .where(om.StudyModel.study_name.in_(names))).all())
    if not studies:
        return {}
    t = om.TrialModel
    mine = t.study_id.in_(list(studies))
    rows = s.execute(select(t.trial_id, t.number, t.state, t.study_id).where(mine).order_by(t.study_id, t.number))
    rows = rows.all()
    params: dict[int, dict[str, Value]] = {}
    tp = om.TrialParamModel
    for p in s.execute(select(tp.trial_id, tp.param_name, tp.param_value, tp.distribution_json)
                       .join(t, t.trial_id == tp.trial_id).where(mine)):
        params.setdefault(p.trial_id, {})[p.param_name] = _distribution(p.distribution_json).to_external_repr(
            p.param_value)
    tv = om.TrialValueModel
    values = {v.trial_id: tv.stored_repr_to_value(v.value, v.value_type)
              for v in s.execute(select(tv.trial_id, tv.value, tv.value_type).join(t, t.trial_id == tv.trial_id)
                                 .where(mine, tv.objective == 0))}
    reported: dict[int, dict[int, float]] = {}
    iv = om.TrialIntermediateValueModel
    if steps:
        for r in s.execute(select(iv.trial_id, iv.step, iv.intermediate_value, iv.intermediate_value_type)
                           .join(t, t.trial_id == iv.trial_id).where(mine).order_by(iv.step)):
            reported.setdefault(r.trial_id, {})[r.step] = iv.stored_repr_to_intermediate_value(
                r.intermediate_value, r.intermediate_value_type)
    attrs: dict[int, dict[str, Any]] = {}
    ua = om.TrialUserAttributeModel
    for r in s.execute(select(ua.trial_id, ua.key, ua.value_json).join(t, t.trial_id == ua.trial_id).where(mine)):
        attrs.setdefault(r.trial_id, {})[r.key] = json.loads(r.value_json)
    out: dict[str, list[StudyTrial]] = {name: [] for name in studies.values()}
    for r in rows:
        out[studies[r.study_id]].append(StudyTrial(
            trial_id=r.trial_id, number=r.number, state=r.state.name, params=params.get(r.trial_id, {}),
            value=values.get(r.trial_id), intermediate=reported.get(r.trial_id, {}), attrs=attrs.get(r.trial_id, {})))
    return out
