"""A sweep's cost, on SQLite and PostgreSQL: estimated from the admin's price book (as a job's is at submit), and its
whole ceiling (every trial at its max runtime) weighed against the team's budget when it is created."""

from __future__ import annotations

import pytest

from services.costs import set_price
from services.models import ValidationProblem
from services.usage import UsageService
from tests.test_budgets import ADMIN, p  # noqa: F401 - the fixture (4 local GPUs)
from tests.test_sweeps import SCRIPT, spec

LR = {"learning_rate": {"kind": "uniform", "low": 0.001, "high": 0.1}}


def test_a_sweep_is_priced_by_the_price_book_and_refused_past_the_budget(p) -> None:  # noqa: F811
    (p.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    with p.jobs.session() as s:
        set_price(s, "ada", {"gpu_type": "local", "gpu_hour": 10.0, "node_hour": 1.0, "effective_from": "2020-01-01"})
    four = spec(method="random", budget=4, parallel=1, base={"gpus": 1, "max_runtime_hours": 2.0}, params=LR)
    assert p.sweeps.estimate_cost(ADMIN, four) == (8.0, 88.0)  # 4 trials × 2 h × ($10 a GPU + $1 the node)
    UsageService.of(p.jobs).set_budget(ADMIN, {"scope": "team", "name": "vision", "unit": "money",
                                               "monthly_limit": 50.0})
    with pytest.raises(ValidationProblem) as refused:
        p.sweeps.create(ADMIN, four)
    assert str(refused.value) == ("This sweep of 4 trials may cost up to $88.00 (8 h × 1 GPU); your team vision has "
                                  "$50.00 left this month: the job is refused, since it may cost more than is left.")
    assert p.sweeps.list(ADMIN) == []
    assert p.sweeps.create(ADMIN, spec(method="random", budget=2, parallel=1, base={
        "gpus": 1, "max_runtime_hours": 2.0}, params=LR)).spec.budget == 2  # $44 fits
