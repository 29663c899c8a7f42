"""How much each parameter of a sweep mattered to its objective: Optuna's `get_param_importances` over the
finished trials (the sweep page's "Parameter importances").

The trials are read as the sweep page already has them (services/sweeps.py's TrialView; its
`SweepService.importances` is what pages and the API call), copied into an in-memory
study: nothing touches the sweep's own study in the portal's database, which its runner owns. The evaluator is
PED-ANOVA, which needs nothing beyond Optuna (its default, fANOVA, needs scikit-learn, which the portal lacks).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.distributions import CategoricalDistribution

from services.sweep_spec import SweepSpec
from services.sweep_study import distributions

if TYPE_CHECKING:  # services/sweeps.py calls this module
    from services.sweeps import TrialView

# Fewer finished trials than this say nothing about which parameter matters.
MIN_TRIALS = 4


def param_importances(spec: SweepSpec, trials: Sequence[TrialView]) -> dict[str, float]:
    """Each varied parameter's share of the objective's variation (they add up to 1), largest first; {} until
    MIN_TRIALS trials have a value, or when only one parameter varies (it is all of it)."""
    space = distributions(spec)
    scored = [t for t in trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)
              and all(n in t.params for n in space)]
    varied = {n: d for n, d in space.items()
              if len({t.params[n] for t in scored}) > 1}  # a parameter every trial shares explains nothing
    if len(scored) < MIN_TRIALS or len(varied) < 2:
        return {}
    study = optuna.create_study(direction=spec.direction, sampler=optuna.samplers.RandomSampler())
    for t in scored:
        params = {n: t.params[n] for n in varied}
        if any(isinstance(d, CategoricalDistribution) and params[n] not in d.choices for n, d in varied.items()):
            continue  # a value the spec no longer lists (a clone's edits): not part of this search space
        study.add_trial(optuna.trial.create_trial(params=params, distributions=varied, value=float(t.value)))
    if len(study.trials) < MIN_TRIALS:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return {n: float(v) for n, v in sorted(found.items(), key=lambda kv: -kv[1])}
