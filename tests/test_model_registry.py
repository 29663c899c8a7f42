"""Register model against a real `mlflow server` (SQLite backend, local artifact store) started by the tests
(tests/mlflow_env.py), with real local jobs: through a real portal process and the client (202, pending, done), the
version's params, metrics, tags, alias and files in MLflow's artifact store; a link out of the output, `..` and a
bad name refused with a sentence; a user who is not the owner gets 403; and a portal killed mid-registration (or
after MLflow made the version, before the portal recorded it) finishes without making a second version."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from ml_job_portal import JobClient

from services.model_registry import ModelRegistry
from services.registry_worker import RegistryWorker
from services.store.registry_tables import DONE, PENDING, ModelRegistration
from tests.conftest import PortalServer, create_token, run_to_end, wait_until
from tests.mlflow_env import MlflowServer, mlflow_server, start_mlflow, stop_mlflow  # noqa: F401 - the fixture
from tests.test_client import local_user_name

pytest.importorskip("mlflow", reason="mlflow-skinny (requirements.txt) is the portal's MLflow client")
from mlflow import MlflowClient

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
SCRIPT = r'''
import os, sys
from pathlib import Path
out = Path(os.environ["PORTAL_OUTPUT_DIR"])
(out / "model").mkdir()
(out / "model" / "weights.bin").write_bytes(bytes(range(256)) * 4096)
(out / "model" / "config.json").write_text('{"layers": 3}')
big = int(os.environ.get("BIG_MB", "0") or 0)
if big:
    (out / "model" / "big.bin").write_bytes(os.urandom(big << 20))
(out / "leak").mkdir()
os.symlink("/etc/passwd", out / "leak" / "passwd")
os.symlink("/etc", out / "etc")
print("Epoch 1/1", flush=True)
print("loss=0.25 accuracy=0.875", flush=True)
'''


def client_for(url: str) -> MlflowClient:
    return MlflowClient(tracking_uri=url, registry_uri=url)


def versions_tagged(url: str, key: str) -> list:
    return client_for(url).search_model_versions(f"tags.`portal.registration` = '{key}'")


def local_job(portal, user, name: str) -> int:
    """A finished local job that ran SCRIPT (in the `portal` fixture's process; its sync loop driven by hand)."""
    (portal.settings.workspace_dir / "reg.py").write_text(SCRIPT)
    job_id = portal.jobs.submit(user, {"name": name, "script": "reg.py", "epochs": 1})
    assert run_to_end(portal, user, job_id).status.value == "Succeeded", portal.jobs.log_tail(job_id)
    return job_id


@pytest.fixture
def live(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[tuple[PortalServer, JobClient, str, str]]:  # noqa: F811
    server = PortalServer(tmp_path / "portal-data", env={"PORTAL_MLFLOW_TRACKING_URI": mlflow_server.url,
                                                         "PORTAL_PUBLIC_URL": "https://portal.example.com"}).start()
    try:
        me, rita = create_token(server.data_dir, local_user_name()), create_token(server.data_dir, "rita")
        with JobClient(server.url, me) as client:
            yield server, client, me, rita
    finally:
        server.stop()


def finished_job(client: JobClient, tmp_path: Path, name: str, **values: object):
    (tmp_path / "reg_train.py").write_text(SCRIPT)
    script = client.upload_script(tmp_path / "reg_train.py")
    job = client.submit_job(name=name, script=script, epochs=1, learning_rate=0.003, batch_size=16, **values)
    job.wait(timeout=90, poll=0.2)
    assert job.status == "Succeeded", job.logs()
    return job


@pytest.mark.timeout(300)
def test_register_a_finished_jobs_output_in_mlflow(live, mlflow_server: MlflowServer,  # noqa: F811
                                                   tmp_path: Path) -> None:
    server, client, me, rita = live
    job = finished_job(client, tmp_path, "resnet-demo")
    url = f"{server.url}/api/v1/jobs/{job.id}/register-model"
    mine = {"Authorization": f"Bearer {me}"}

    # Only the owner (or an admin) may register; another researcher sees the job but gets a sentence.
    answer = httpx.post(url, json={"paths": ["model"], "name": "resnet"}, headers={"Authorization": f"Bearer {rita}"})
    assert answer.status_code == 403 and "may register models" in answer.json()["error"]
    # Nothing a job wrote leads the portal elsewhere: a link, a folder holding one, '..' are refused.
    for paths, words in ((["etc"], "is a link"), (["leak"], "is a link or a special file"),
                         (["../../1"], "not a path inside the job's output"), (["nothing-here"], "not in the job's")):
        refused = httpx.post(url, json={"paths": paths, "name": "resnet"}, headers=mine)
        assert refused.status_code == 422 and words in refused.json()["problems"]["paths"], refused.json()
    bad = httpx.post(url, json={"paths": ["model"], "name": "team/resnet", "alias": "latest"}, headers=mine)
    assert bad.status_code == 422 and set(bad.json()["problems"]) == {"name", "alias"}

    made = job.register_model("resnet", ["model/"], alias="champion")
    assert made["status"] == PENDING and made["paths"] == ["model"]
    wait_until(lambda: job.models()[0]["status"] != PENDING, timeout=120, interval=0.5)
    done = job.models()[0]
    assert done["status"] == DONE, done
    assert done["version"] == "1" and done["model_url"] == f"{mlflow_server.url}/#/models/resnet/versions/1"

    mlflow = client_for(mlflow_server.url)
    version = mlflow.get_model_version_by_alias("resnet", "champion")
    assert version.version == "1" and version.tags["portal.job_id"] == str(job.id)
    run = mlflow.get_run(version.run_id)
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["batch_size"] == "16"
    assert run.data.metrics == {"loss": 0.25, "accuracy": 0.875}
    assert run.data.tags["portal.owner"] == local_user_name()
    assert run.data.tags["portal.job_url"] == f"https://portal.example.com/job?id={job.id}"
    assert version.source == f"runs:/{run.info.run_id}/model"
    stored = mlflow_server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts" / "model" / "model"
    assert (stored / "weights.bin").read_bytes() == WEIGHTS
    assert sorted(p.name for p in stored.iterdir()) == ["config.json", "weights.bin"]
    assert not any(p.name == "passwd" for p in mlflow_server.artifacts.rglob("*"))



def registration_status(data_dir: Path, reg_id: int) -> str:
    with sqlite3.connect(data_dir / "portal.db") as db:
        return db.execute("SELECT status FROM model_registrations WHERE id = ?", (reg_id,)).fetchone()[0]


@pytest.mark.timeout(400)
def test_a_portal_killed_mid_upload_finishes_the_registration_without_a_second_version(
        tmp_path: Path, mlflow_server: MlflowServer) -> None:  # noqa: F811
    data = tmp_path / "portal-data"
    env = {"PORTAL_MLFLOW_TRACKING_URI": mlflow_server.url, "BIG_MB": "96"}  # the job's own env: a long upload
    server = PortalServer(data, env=env).start()
    me = create_token(data, local_user_name())
    mlflow = client_for(mlflow_server.url)
    try:
        with JobClient(server.url, me) as client:
            job = finished_job(client, tmp_path, "killed-demo")
            made = job.register_model("killed-model", ["model"], alias="prod")
        key = made["registration_id"]

        def filling() -> list:
            experiments = [e.experiment_id for e in mlflow.search_experiments()]
            return mlflow.search_runs(experiments, f"tags.`portal.registration` = '{key}'") if experiments else []

        wait_until(filling, timeout=120, interval=0.1)  # the run exists: its files are being uploaded
        assert server.proc is not None
        children = psutil.Process(server.proc.pid).children(recursive=True)
        os.kill(server.proc.pid, signal.SIGKILL)
        for child in children:  # the upload goes down with it
            child.kill()
        server.proc.wait()
    finally:
        server.stop()
    assert registration_status(data, made["id"]) == PENDING
    assert versions_tagged(mlflow_server.url, key) == []

    again = PortalServer(data, env=env).start()
    try:
        with JobClient(again.url, me) as client:
            job = client.get_job(job.id)
            wait_until(lambda: job.models()[0]["status"] != PENDING, timeout=150, interval=0.5)
            done = job.models()[0]
    finally:
        again.stop()
    assert done["status"] == DONE and done["version"] == "1", done
    assert [v.version for v in mlflow.search_model_versions("name = 'killed-model'")] == ["1"]
    assert len(filling()) == 1  # the run of the first attempt, filled again, not a second one
    assert mlflow.get_model_version_by_alias("killed-model", "prod").version == "1"


@pytest.mark.timeout(300)
def test_a_version_made_but_not_recorded_is_found_again_not_made_twice(
        portal, user, mlflow_server: MlflowServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(portal.settings, "mlflow_tracking_uri", mlflow_server.url)
    job_id = local_job(portal, user, "twice-demo")
    registry, worker = ModelRegistry(portal.jobs), RegistryWorker(portal.jobs)
    made = registry.register(user, job_id, ["model/weights.bin"], "twice-model", "staging")
    assert worker.run_due() and registry.registrations(user, job_id)[0].version == "1"
    # As a portal killed after MLflow made the version, before its own commit, leaves it: pending, no version.
    with portal.jobs.session() as s:
        row = s.get_one(ModelRegistration, made.id)
        row.status, row.version, row.run_id, row.model_url, row.finished_at = PENDING, None, None, None, None
    worker.recover_claims()  # as the restarted portal's worker does when it starts
    assert worker.run_due()
    again = registry.registrations(user, job_id)[0]
    assert (again.status, again.version) == (DONE, "1")
    mlflow = client_for(mlflow_server.url)
    assert [v.version for v in mlflow.search_model_versions("name = 'twice-model'")] == ["1"]
    assert mlflow.get_model_version_by_alias("twice-model", "staging").version == "1"


@pytest.mark.timeout(300)
def test_the_login_comes_from_its_files_and_a_refused_one_fails_at_once_with_a_sentence(
        portal, user, tmp_path: Path, monkeypatch) -> None:
    secured = start_mlflow(tmp_path / "mlflow-auth", admin_password="s3cret-Passw0rd!")
    try:
        password = tmp_path / "mlflow-password"
        password.write_text("not-the-password\n")
        for name, value in (("mlflow_tracking_uri", secured.url), ("mlflow_username", "admin"),
                            ("mlflow_password_file", str(password))):
            monkeypatch.setattr(portal.settings, name, value)
        job_id = local_job(portal, user, "login-demo")
        registry, worker = ModelRegistry(portal.jobs), RegistryWorker(portal.jobs)
        registry.register(user, job_id, ["model"], "secured-model")
        assert worker.run_due()
        refused = registry.registrations(user, job_id)[0]
        assert refused.status == "failed" and f"MLflow at {secured.url} refused it" in refused.error, refused
        assert "Traceback" not in refused.error and "not-the-password" not in refused.error
        assert "MLFLOW_TRACKING_PASSWORD" not in os.environ  # the login went to the upload's process only

        password.write_text("s3cret-Passw0rd!\n")  # read again at the next registration: no restart needed
        registry.register(user, job_id, ["model"], "secured-model", "prod")
        assert worker.run_due()
        done = registry.registrations(user, job_id)[0]
        assert (done.status, done.version) == (DONE, "1"), done
    finally:
        stop_mlflow(secured)
