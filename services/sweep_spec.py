"""What a sweep is, as the Submit form, the API and the client describe it: a job request whose hyperparameters
may each be fixed, a list of values or a range, plus the search method, objective, budget and stopping rules.

Shared by services/sweeps*.py (which runs it with Optuna), pages/ (the form and the sweep page) and api/sweeps.py.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator

from services.models import DNS1123_LABEL, JobRequest, split_args
from services.validation import plain_error, validation_problems

# Trials are named "<sweep>-t<n>" (n up to 4 digits), which must still be a Kubernetes name of at most 63.
SWEEP_NAME_MAX = 57
MAX_TRIALS = 1000
# The form's own numeric fields; any other name is passed to the script as `--<name> <value>`.
FORM_PARAMS = ("learning_rate", "batch_size", "epochs")
EXTRA_PARAM = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

Value = float | int | str


class ParamSpec(BaseModel):
    """One hyperparameter: a fixed value, a list to choose from, or a range (uniform, log-uniform, integer)."""

    kind: Literal["fixed", "list", "uniform", "loguniform", "int"]
    value: Value | None = None
    values: list[Value] = Field(default_factory=list, max_length=100)
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamSpec:
        if self.kind == "fixed" and self.value is None:
            raise ValueError("a fixed parameter needs a value")
        if self.kind == "list" and not self.values:
            raise ValueError("a list parameter needs at least one value")
        if self.kind in ("uniform", "loguniform", "int"):
            if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError("a range needs a lowest and a highest value")
            if self.low >= self.high:
                raise ValueError("the lowest value must be below the highest")
            if self.kind == "loguniform" and self.low <= 0:
                raise ValueError("a log-uniform range must be above 0")
        return self

    def grid_values(self) -> list[Value] | None:
        """The values a grid tries; None for a continuous range (a grid cannot enumerate it)."""
        if self.kind == "fixed":
            return [self.value]  # type: ignore[list-item]
        if self.kind == "list":
            return list(self.values)
        if self.kind == "int" and self.high - self.low <= MAX_TRIALS:  # type: ignore[operator]
            return list(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        return None


class SweepSpec(BaseModel):
    name: str = Field(min_length=1, max_length=SWEEP_NAME_MAX)
    base: dict[str, Any] = Field(description="The job request (Submit form fields) every trial starts from")
    params: dict[str, ParamSpec] = Field(min_length=1, max_length=20)
    method: Literal["grid", "random", "tpe"] = "tpe"
    objective: str = Field(default="loss", min_length=1, max_length=100, description="A metric the script reports")
    direction: Literal["minimize", "maximize"] = "minimize"
    aggregate: Literal["final", "best"] = "final"
    budget: int = Field(default=10, ge=1, le=MAX_TRIALS, description="Trials in all, never exceeded")
    parallel: int = Field(default=2, ge=1, le=100, description="Trials running at once")
    early_stopping: Literal["none", "median", "halving"] = "median"
    retries: int = Field(default=0, ge=0, le=5, description="Times a failed trial is run again")
    max_failed: int = Field(default=3, ge=1, le=MAX_TRIALS, description="The sweep stops after this many failed trials")

    @field_validator("name")
    @classmethod
    def _k8s_name(cls, v: str) -> str:
        if not DNS1123_LABEL.match(v):
            raise ValueError("use only lower-case letters, digits and '-', starting and ending with a letter or digit")
        return v

    @field_validator("params")
    @classmethod
    def _known_names(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in v:
            if name not in FORM_PARAMS and not EXTRA_PARAM.match(name):
                raise ValueError(f"'{name}' is not a parameter name (lower-case letters, digits, '_' and '-')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.method == "grid":
            size = self.grid_size()
            if size is None:
                raise ValueError("params: a grid needs lists or integer ranges, not continuous ranges")
            if self.budget > size:
                self.budget = size  # a grid has no more points than this; the budget stays exact
        self.parallel = min(self.parallel, self.budget)
        self.trial_request(self.first_values())  # the base request and the names must make a valid job
        return self

    def first_values(self) -> dict[str, Value]:
        return {n: (p.grid_values() or [p.low])[0] for n, p in self.params.items()}  # type: ignore[misc]

    def grid_size(self) -> int | None:
        sizes = [p.grid_values() for p in self.params.values()]
        if any(s is None for s in sizes):
            return None
        return math.prod(len(s) for s in sizes)  # type: ignore[arg-type]

    def grid_points(self) -> list[dict[str, Value]]:
        """Every combination, in a fixed order (so a resumed sweep continues where it stopped)."""
        names = list(self.params)
        lists = [self.params[n].grid_values() or [] for n in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]

    def trial_request(self, values: dict[str, Value]) -> JobRequest:
        """The job request of the trial with these parameter values: form fields set, others as extra arguments."""
        data = dict(self.base)
        extra = split_args(str(data.get("extra_args", "")))
        for name, value in values.items():
            if name in FORM_PARAMS:
                data[name] = value
            else:
                extra += [f"--{name}", str(value)]
        data["extra_args"] = shlex.join(extra)
        data.setdefault("name", self.name)
        return JobRequest.model_validate(data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> SweepSpec:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise plain_error(exc) from None


def readable_spec(data: dict[str, Any], name: str) -> tuple[SweepSpec, str | None]:
    """A stored spec and None; or, for one that no longer validates (written before a rule was tightened, its
    script's name since refused), what can still be read of it, each field that fails at its default, and the
    sentence saying what is wrong. Pages and the API then show the sweep, failed, instead of an error."""
    try:
        return SweepSpec.model_validate(data), None
    except ValidationError as exc:
        problems = validation_problems(exc)
    fields: dict[str, Any] = {"name": name, "base": {}, "params": {}}
    for field, info in SweepSpec.model_fields.items():
        if field in data and field != "params":
            try:
                fields[field] = TypeAdapter(Annotated[info.annotation, info]).validate_python(data[field])
            except ValidationError:
                continue
    for param, raw in (data.get("params") or {}).items() if isinstance(data.get("params"), dict) else ():
        try:
            fields["params"][param] = ParamSpec.model_validate(raw)
        except ValidationError:
            continue  # a row the page cannot draw; the trials still carry their values
    said = "; ".join(f"{field}: {problem}" if field else problem for field, problem in problems.items())
    return SweepSpec.model_construct(**fields), f"This sweep's settings are no longer valid ({said}): it cannot go on."
