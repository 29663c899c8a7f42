"""A sweep on the real control plane with KWOK's simulated GPU nodes: its trials are Kubernetes Jobs, queued and run
like any job, their objective read from the pods' logs (a recorded run of the example script)."""

from __future__ import annotations

import json

from services.sweep_runner import SweepRunner
from tests.conftest import wait_until
from tests.k8s.test_kubernetes_backend import ME, outcome
from tests.test_sweeps import most_at_once, sweep_jobs


def test_a_grid_sweep_runs_each_trial_once_as_a_kubernetes_job_two_at_a_time(k8s_portal, cluster, namespace):
    outcome(k8s_portal, runtime="2s")
    runner = next(w for w in k8s_portal.sync.workers if isinstance(w, SweepRunner))
    k8s_portal.jobs.backend.start()
    sweep = k8s_portal.sweeps.create(ME, {
        "name": "k8s-grid", "base": {"script": "train_example.py", "epochs": 3, "gpus": 1}, "method": "grid",
        "parallel": 2, "early_stopping": "none",
        "params": {"learning_rate": {"kind": "list", "values": [0.01, 0.1]},
                   "batch_size": {"kind": "list", "values": [16, 32]}}})

    def ended():
        k8s_portal.sync.tick()
        runner.tick()
        assert runner.last_error is None, runner.last_error
        view = k8s_portal.sweeps.get(ME, sweep.id)
        return view if view.finished else None

    view = wait_until(ended, timeout=240, interval=0.2)
    assert (view.state, view.progress.done) == ("done", 4), view
    jobs = sweep_jobs(k8s_portal, sweep.id)
    assert sorted(j.sweep_trial for j in jobs) == [0, 1, 2, 3] and {j.status for j in jobs} == {"Succeeded"}
    assert most_at_once(jobs) <= 2
    made = json.loads(cluster.kubectl("-n", namespace, "get", "jobs", "-o", "json"))["items"]
    names = sorted(j["metadata"]["name"] for j in made)
    assert names == sorted(f"mlp-{j.id}" for j in jobs)  # one Kubernetes Job per trial, none twice
    requests = {(j.request["learning_rate"], j.request["batch_size"]) for j in jobs}
    assert requests == {(0.01, 16), (0.01, 32), (0.1, 16), (0.1, 32)}
    assert all(t.value is not None for t in k8s_portal.sweeps.trials(ME, sweep.id))  # the loss from the pods' logs
