"""Jobs submitted together against one budget (SQLite and PostgreSQL, real local jobs): each queued or running job
holds its ceiling less what it has accrued, so a budget that holds two of them refuses the third with a sentence
saying what is held; once they have ended, only what they cost counts."""

from __future__ import annotations

import pytest

from services.models import ValidationProblem
from tests.conftest import run_to_end
from tests.test_budgets import ADMIN, budget, p  # noqa: F401 - the fixture


def test_jobs_submitted_together_each_hold_their_ceiling(p) -> None:  # noqa: F811
    budget(p, unit="money", monthly_limit=12.0)  # each job's ceiling: 2 h × (1 GPU at $2.50 + $0.40) = $5.80
    waiting = [p.jobs.submit(ADMIN, {"name": f"j{i}", "script": "sleep.py", "gpus": 1, "max_runtime_hours": 2,
                                     "extra_args": "--seconds 0.5"}) for i in range(2)]
    with pytest.raises(ValidationProblem) as refused:
        p.jobs.submit(ADMIN, {"name": "j2", "script": "sleep.py", "gpus": 1, "max_runtime_hours": 2,
                              "extra_args": "--seconds 0.5"})
    assert "after $11.60 held for queued and running jobs" in str(refused.value)
    assert "the job is refused, since it may cost more than is left" in str(refused.value)
    for job_id in waiting:
        run_to_end(p, ADMIN, job_id)
    p.jobs.submit(ADMIN, {"name": "j3", "script": "sleep.py", "gpus": 1, "max_runtime_hours": 2,
                          "extra_args": "--seconds 0.1"})  # they cost cents: the budget has room again
