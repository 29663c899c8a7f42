"""Sweeps through a real portal process: the REST API and the Python client as a notebook uses them, its errors as
sentences, and a portal SIGKILLed mid-sweep that resumes without running any trial twice."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ml_job_portal import JobClient, ValidationError, loguniform
from sqlalchemy import select

from services.auth import local_user
from services.config import Settings
from services.portal import build_portal
from services.store.orm import Job
from tests.conftest import PortalServer, create_token, wait_until
from tests.test_sweeps import SCRIPT


def prepared(tmp_path: Path) -> tuple[Path, str]:
    data_dir = tmp_path / "portal-data"
    setup = build_portal(Settings(data_dir=data_dir, backend="local"))
    (setup.settings.workspace_dir / "lr_sweep.py").write_text(SCRIPT)
    name = local_user(setup.settings).name
    setup.close()
    return data_dir, create_token(data_dir, name)


@pytest.fixture
def running(tmp_path: Path):
    data_dir, token = prepared(tmp_path)
    server = PortalServer(data_dir).start()
    yield server, token
    server.stop()


def test_a_notebook_sweeps_a_learning_rate_range_and_two_batch_sizes_then_runs_the_best(running):
    server, token = running
    client = JobClient(server.url, token=token)
    sweep = client.submit_sweep("nb-sweep", "lr_sweep.py", {"learning_rate": loguniform(1e-3, 1.0),
                                                            "batch_size": [16, 64]},
                                method="tpe", budget=6, parallel=3, epochs=2)
    assert sweep.state == "running" and sweep.estimate["trials"] == 6 and sweep.estimate["cost"] >= 0
    sweep.wait(timeout=120, poll=0.3)
    assert sweep.state == "done" and sweep.progress["done"] + sweep.progress["pruned"] == 6, sweep
    trials = sweep.trials()
    assert [t["number"] for t in trials] == list(range(6)) and {t["state"] for t in trials} <= {"complete", "pruned"}
    best = sweep.best()
    listed = httpx.get(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).json()["jobs"]
    assert sorted(j["sweep_trial"] for j in listed if j["sweep_id"] == sweep.id) == sorted(t["number"] for t in trials)
    assert client.get_job(trials[0]["job_id"]).sweep_id == sweep.id
    assert best["value"] == min(t["value"] for t in trials if t["state"] == "complete")
    assert sweep.stop_reason == f"All 6 trials ran; the best is trial {best['number']} (loss {best['value']:.4g})."
    job = sweep.submit_best().wait(timeout=60, poll=0.3)
    assert job.status == "Succeeded" and job.request["learning_rate"] == best["params"]["learning_rate"]
    assert job.name == "nb-sweep-best"
    assert [s.id for s in client.list_sweeps()] == [sweep.id]
    with pytest.raises(ValidationError) as exc:
        sweep.extend(0)
    assert "trials" in str(exc.value)


def test_bad_requests_get_a_sentence_and_the_right_status(running):
    server, token = running
    auth = {"Authorization": f"Bearer {token}"}
    post = lambda path, body: httpx.post(f"{server.url}/api/v1/{path}", json=body, headers=auth, timeout=30)  # noqa: E731
    good = {"name": "ok", "base": {"script": "lr_sweep.py", "epochs": 1},
            "params": {"learning_rate": {"kind": "list", "values": [0.01, 0.1]}}, "method": "grid"}
    answer = post("sweeps", good | {"budgt": 3})
    assert answer.status_code == 422 and answer.json()["problems"]["budgt"].startswith("is not a field of a sweep")
    answer = post("sweeps", good | {"params": {"learning_rate": {"kind": "uniform", "low": 1, "high": 0.1}}})
    assert answer.status_code == 422 and "lowest value must be below the highest" in answer.json()["error"]
    answer = post("sweeps", good | {"base": {"script": "nowhere.py"}})
    assert answer.status_code == 422 and "nowhere.py" in answer.json()["problems"]["script"]
    per_hour = Settings(data_dir=server.data_dir).cost_per_hour(0, 1)
    assert post("sweeps/estimate", good).json() == {"trials": 2, "gpu_hours": 0.0, "cost": round(2 * 8 * per_hour, 2)}
    assert httpx.get(f"{server.url}/api/v1/sweeps/999", headers=auth).json() == {"error": "Sweep 999 was not found."}
    assert httpx.get(f"{server.url}/api/v1/sweeps").status_code == 401
    created = post("sweeps", good)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    assert post(f"sweeps/{sweep_id}/extend", {"trials": "two"}).status_code == 422
    assert post(f"sweeps/{sweep_id}/extend", {"trials": 2}).status_code == 409  # a grid of 2 has no more points
    assert post(f"sweeps/{sweep_id}/stop", {}).status_code == 202
    again = post(f"sweeps/{sweep_id}/stop", {})
    assert again.status_code == 409 and "is not running" in again.json()["error"]


def test_a_portal_killed_mid_sweep_resumes_without_running_a_trial_twice(tmp_path: Path):
    data_dir, token = prepared(tmp_path)
    server = PortalServer(data_dir).start()
    client = JobClient(server.url, token=token)
    try:
        sweep = client.submit_sweep("restart", "lr_sweep.py", {"learning_rate": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]},
                                    method="grid", parallel=2, early_stopping="none", epochs=6,
                                    extra_args="--slow-above 0")  # 0.4 s per epoch: trials are mid-run at the kill
        wait_until(lambda: sweep.refresh().progress["done"] >= 1, timeout=60, interval=0.2)
        server.proc.kill()  # SIGKILL: no shutdown at all
        server.proc.wait(10)
        server = PortalServer(data_dir, port=server.port).start()
        sweep.wait(timeout=120, poll=0.3)
    finally:
        server.stop()
    assert sweep.state == "done" and sweep.progress["done"] == 6, sweep
    p = build_portal(Settings(data_dir=data_dir, backend="local"))
    try:
        with p.jobs.session() as s:
            jobs = list(s.scalars(select(Job).where(Job.sweep_id == sweep.id)))
    finally:
        p.close()
    assert sorted(j.sweep_trial for j in jobs) == list(range(6))  # one job per trial, none twice
    assert sorted(j.request["learning_rate"] for j in jobs) == [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    assert {j.status for j in jobs} == {"Succeeded"}


def test_the_notebook_example_runs_against_the_portal(running):
    server, token = running
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PORTAL_URL=server.url, PORTAL_TOKEN=token,
               PYTHONPATH=os.pathsep.join([str(root / "client"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "examples/notebook_sweep.py"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^All 8 trials ran; the best is trial \d \(loss \d\.\d+\)\.$", out, re.MULTILINE), out
    assert len(re.findall(r"^trial \d: (complete|pruned) ", out, re.MULTILINE)) == 8, out
    assert re.search(r"^Best: trial \d with loss \d\.\d{4} at \{'", out, re.MULTILINE), out
    assert re.search(r"^lr-search-best: Succeeded, final loss \d\.\d{4}$", out, re.MULTILINE), out


def test_a_sweeps_trials_in_history_its_importances_and_a_sweep_gone_invalid_through_the_api(running):
    server, token = running
    auth = {"Authorization": f"Bearer {token}"}
    client = JobClient(server.url, token=token)
    client.submit_job("on-its-own", "lr_sweep.py", epochs=1)
    sweep = client.submit_sweep("grid", "lr_sweep.py", {"learning_rate": [0.001, 0.01, 0.3], "batch_size": [16, 64]},
                                method="grid", parallel=3, early_stopping="none", epochs=2).wait(timeout=120, poll=0.3)
    trial_ids = sorted(t["job_id"] for t in sweep.trials())
    listed = httpx.get(f"{server.url}/api/v1/history", params={"sweep": sweep.id}, headers=auth)
    assert listed.status_code == 200, listed.text
    assert sorted(j["id"] for j in listed.json()["jobs"]) == trial_ids
    assert sorted(j.id for j in client.history(sweep=sweep.id)) == trial_ids
    assert client.history_summary(sweep=sweep.id)["jobs"] == 6
    importances = sweep.importances()
    assert set(importances) == {"learning_rate", "batch_size"} and abs(sum(importances.values()) - 1) < 1e-6
    assert list(importances.values()) == sorted(importances.values(), reverse=True)  # largest first
    doc = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    assert "/api/v1/sweeps/{sweep_id}/importances" in doc["paths"]
    assert "sweep" in {p["name"] for p in doc["paths"]["/api/v1/history"]["get"]["parameters"]}
    # Stored scripts renamed to one the portal refuses since: a running sweep reads as failed, with the sentence;
    # the finished one keeps its result, and says why it cannot be extended.
    slow = client.submit_sweep("slow", "lr_sweep.py", {"learning_rate": [0.001, 0.01]}, method="grid", epochs=50,
                               extra_args="--slow-above 0")
    with sqlite3.connect(server.data_dir / "portal.db") as db:
        db.execute("UPDATE sweeps SET spec = json_set(spec, '$.base.script', 'lr_sweep.txt')")
    said = ("This sweep's settings are no longer valid (script: the training script must be a Python file (.py)): "
            "it cannot go on.")
    answer = httpx.get(f"{server.url}/api/v1/sweeps/{slow.id}", headers=auth)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["stop_reason"]) == ("failed", said)
    assert slow.wait(timeout=60, poll=0.3).state == "failed" and slow.stop_reason == said  # its trials stopped
    assert {t["state"] for t in slow.trials()} <= {"stopped", "failed"}
    assert [(s.state, s.stop_reason) for s in client.list_sweeps()] == [
        ("failed", said), ("done", f"{sweep.refresh().stop_reason.split(' This')[0]} {said}")]
    refused = httpx.post(f"{server.url}/api/v1/sweeps/{sweep.id}/extend", json={"trials": 1}, headers=auth)
    assert (refused.status_code, refused.json()["error"]) == (409, said)
