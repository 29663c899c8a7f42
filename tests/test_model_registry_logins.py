"""Model registry, per team: a group's own MLflow login (PORTAL_MLFLOW_GROUP_CREDENTIALS) against a real `mlflow
server` behind MLflow's basic-auth app, used for its members' jobs and sent to no other server; and one upload
process serves registration after registration (MLflow's client loads once, not per registration)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.config import Settings
from services.model_registry import ModelRegistry
from services.models import Role, User
from services.registry_worker import RegistryWorker, login_for
from services.store.registry_tables import DONE, FAILED
from tests.mlflow_env import start_mlflow, stop_mlflow
from tests.test_model_registry import SCRIPT

pytest.importorskip("mlflow", reason="mlflow-skinny (requirements.txt) is the portal's MLflow client")

PASSWORD = "t3am-A-Passw0rd!"


def job_of(portal, owner: User, name: str) -> int:
    from tests.conftest import run_to_end

    (portal.settings.workspace_dir / "reg.py").write_text(SCRIPT)
    job_id = portal.jobs.submit(owner, {"name": name, "script": "reg.py", "epochs": 1})
    assert run_to_end(portal, owner, job_id).status.value == "Succeeded", portal.jobs.log_tail(job_id)
    return job_id


@pytest.mark.timeout(300)
def test_a_teams_own_login_registers_its_members_models_and_others_use_the_portals(
        portal, tmp_path: Path, monkeypatch) -> None:
    secured = start_mlflow(tmp_path / "mlflow-auth", admin_password=PASSWORD)
    worker = RegistryWorker(portal.jobs)
    try:
        team_password, portal_password = tmp_path / "team-a-password", tmp_path / "portal-password"
        team_password.write_text(PASSWORD + "\n")
        portal_password.write_text("the-portals-wrong-one\n")
        for name, value in (("mlflow_tracking_uri", secured.url), ("mlflow_username", "admin"),
                            ("mlflow_password_file", str(portal_password)),
                            ("mlflow_group_credentials", {"team-a": {"username": "admin",
                                                                     "password_file": str(team_password)}})):
            monkeypatch.setattr(portal.settings, name, value)
        ana = User("ana", Role.RESEARCHER, groups=("team-a",))
        bob = User("bob", Role.RESEARCHER, groups=("team-b",))
        registry = ModelRegistry(portal.jobs)
        for owner, model in ((ana, "ana-model"), (ana, "ana-model-2"), (bob, "bob-model")):
            registry.register(owner, job_of(portal, owner, model), ["model"], model)
            assert worker.run_due()
        ana_jobs = [r for j in portal.jobs.list_jobs(limit=10, owner="ana") for r in registry.registrations(ana, j.id)]
        assert sorted((r.name, r.status, r.version) for r in ana_jobs) == [
            ("ana-model", DONE, "1"), ("ana-model-2", DONE, "1")]
        (bobs,) = [r for j in portal.jobs.list_jobs(limit=10, owner="bob") for r in registry.registrations(bob, j.id)]
        assert bobs.status == FAILED and f"MLflow at {secured.url} refused it" in bobs.error, bobs
        assert worker.uploads.started == 1, "one upload process for all three registrations"
        assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    finally:
        worker.stop()
        stop_mlflow(secured)


def test_a_teams_login_goes_only_to_its_own_server(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("team-a-token\n")
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri="https://mlflow.example.com",
                        mlflow_group_uris={"team-a": "https://mlflow-a.example.com"},
                        mlflow_group_credentials={"team-a": {"token_file": str(token)}})
    assert login_for(settings, "https://mlflow-a.example.com", ("team-a",)) == {"MLFLOW_TRACKING_TOKEN": "team-a-token"}
    # A registration asked for before team-a had its own server, still bound for the shared one: not team-a's token.
    assert login_for(settings, "https://mlflow.example.com", ("team-a",)) == {}
    with pytest.raises(ValueError, match="give token_file, or username and password_file"):
        Settings(data_dir=tmp_path, mlflow_group_credentials={"team-a": {"user": "x"}})
