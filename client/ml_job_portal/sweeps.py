"""Sweeps for notebooks: one call starts a hyperparameter search whose trials are ordinary jobs.

    from ml_job_portal import JobClient, loguniform
    sweep = client.submit_sweep("lr-search", "train.py", {"learning_rate": loguniform(1e-4, 1e-1),
                                                          "batch_size": [32, 64]}, budget=12, parallel=3)
    sweep.wait()
    print(sweep.best())            # {"number", "params", "value", "job_id", ...}
    job = sweep.submit_best()      # the best trial's values as a single job
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ml_job_portal.jobs import Job


def uniform(low: float, high: float) -> dict[str, Any]:
    """A range sampled evenly."""
    return {"kind": "uniform", "low": low, "high": high}


def loguniform(low: float, high: float) -> dict[str, Any]:
    """A range sampled evenly on a log scale (learning rates)."""
    return {"kind": "loguniform", "low": low, "high": high}


def int_range(low: int, high: int) -> dict[str, Any]:
    """Whole numbers from low to high, both included."""
    return {"kind": "int", "low": low, "high": high}


def _param(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        return {"kind": "list", "values": list(value)}
    return {"kind": "fixed", "value": value}


class Sweep:
    """A sweep on the portal; ``refresh()`` fetches it again, ``wait()`` until it has ended."""

    def __init__(self, client: Any, data: Mapping[str, Any]):
        self._client = client
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.id: int = data["id"]
        self.name: str = data["name"]
        self.state: str = data["state"]
        self.finished: bool = data["finished"]
        self.stop_reason: str | None = data.get("stop_reason")
        self.progress: dict[str, int] = dict(data.get("progress") or {})
        self.estimate: dict[str, Any] | None = data.get("estimate") or getattr(self, "estimate", None)

    def __repr__(self) -> str:
        return f"Sweep(id={self.id}, name={self.name!r}, state={self.state!r}, progress={self.progress})"

    @property
    def _path(self) -> str:
        return f"sweeps/{self.id}"

    def refresh(self) -> Sweep:
        self._update(self._client._json("GET", self._path))
        return self

    def wait(self, timeout: float | None = None, poll: float = 2.0) -> Sweep:
        """Block until the sweep has ended (done, stopped or failed; ``stop_reason`` says why); returns itself.
        Raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Sweep {self.id} ({self.name}) is still {self.state} after {timeout:g} s: "
                                   f"{self.progress}.")
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
        return self

    def best(self) -> dict[str, Any] | None:
        """The best complete trial so far (``{"number", "params", "value", "job_id", ...}``), or None."""
        return self.refresh().data.get("best")

    def trials(self) -> list[dict[str, Any]]:
        """Every trial in order: number, params, state (waiting, running, complete, pruned, failed, stopped),
        value, job_id (its latest job), job_ids (a retried trial has several), reason."""
        return self._client._json("GET", f"{self._path}/trials")["trials"]

    def importances(self) -> dict[str, float]:
        """How much each varied parameter mattered to the objective, largest first, adding up to 1 (Optuna's
        PED-ANOVA); ``{}`` until four trials have finished with a value and two parameters vary."""
        return self._client._json("GET", f"{self._path}/importances")["importances"]

    def stop(self) -> Sweep:
        """No new trials; the running ones are stopped."""
        self._update(self._client._json("POST", f"{self._path}/stop", json_body={}))
        return self

    def extend(self, trials: int) -> Sweep:
        """Add trials to the budget (a finished sweep runs again)."""
        self._update(self._client._json("POST", f"{self._path}/extend", json_body={"trials": trials}))
        return self

    def best_values(self) -> dict[str, Any]:
        """The best trial's job values (the Submit form's fields)."""
        return self._client._json("GET", f"{self._path}/best")["values"]

    def submit_best(self, **changes: Any) -> Job:
        """Run the best trial's values as a single job (``changes`` override some, e.g. ``epochs=50``)."""
        return Job(self._client, self._client._json("POST", "jobs", json_body=self.best_values() | changes))


class SweepsMixin:
    """JobClient's sweep calls."""

    _json: Any

    def submit_sweep(self, name: str, script: str, params: Mapping[str, Any], *, method: str = "tpe",
                     objective: str = "loss", direction: str = "minimize", aggregate: str = "final",
                     budget: int = 10, parallel: int = 2, early_stopping: str = "median", retries: int = 0,
                     max_failed: int = 3, **values: Any) -> Sweep:
        """Start a sweep. ``params``: each hyperparameter a fixed value, a list of values, or a range
        (``uniform(a, b)``, ``loguniform(a, b)``, ``int_range(a, b)``); names other than learning_rate, batch_size
        and epochs reach the script as ``--name value``. ``method``: grid, random or tpe. ``objective``: a metric
        the script prints, minimised or maximised, its final or best value. ``budget`` trials in all, never more;
        ``parallel`` at once; ``early_stopping``: median, halving or none; a failed trial is run again up to
        ``retries`` times; the sweep ends after ``max_failed`` failed trials. ``values``: the job's other fields
        (``epochs=3``, ``gpus=1``). The answer's ``estimate`` is the most it can cost."""
        body = {"name": name, "base": {"script": script, **values},
                "params": {k: _param(v) for k, v in params.items()}, "method": method, "objective": objective,
                "direction": direction, "aggregate": aggregate, "budget": budget, "parallel": parallel,
                "early_stopping": early_stopping, "retries": retries, "max_failed": max_failed}
        return Sweep(self, self._json("POST", "sweeps", json_body=body))

    def get_sweep(self, sweep_id: int) -> Sweep:
        return Sweep(self, self._json("GET", f"sweeps/{int(sweep_id)}"))

    def list_sweeps(self, scope: str = "mine") -> list[Sweep]:
        """Your sweeps, newest first (``scope="all"``: every sweep you may see)."""
        return [Sweep(self, s) for s in self._json("GET", "sweeps", params={"scope": scope})["sweeps"]]
