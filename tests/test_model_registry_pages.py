"""The job page's Register model under AppTest, against a real `mlflow server` (tests/mlflow_env.py) and a real
finished local job: the form refuses a bad alias by its field, registers the chosen folder, and the page then shows
the registered model's name, version, alias and a link to the version in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.registry_worker import RegistryWorker
from tests.mlflow_env import MlflowServer, mlflow_server  # noqa: F401 - the fixture
from tests.test_model_registry import local_job
from tests.test_pages import texts

pytest.importorskip("mlflow", reason="mlflow-skinny (requirements.txt) is the portal's MLflow client")
APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


def link_buttons(at: AppTest) -> list[tuple[str, str]]:
    return [(e.proto.label, e.proto.url) for e in at.get("link_button") if "MLflow" in e.proto.label]


@pytest.mark.timeout(300)
def test_register_model_on_the_job_page_shows_the_version_with_its_link(
        portal, user, mlflow_server: MlflowServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(portal.settings, "mlflow_tracking_uri", mlflow_server.url)
    job_id = local_job(portal, user, "page-demo")
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.query_params["id"] = str(job_id)
    at.switch_page("pages/job.py").run()
    assert not at.exception
    # The job's links (leak/passwd, etc) are not offered: only its own files and the folders holding them.
    assert at.multiselect(key="registry_paths").options == ["model/", "model/config.json", "model/weights.bin"]

    at.multiselect(key="registry_paths").select("model/")
    at.text_input(key="registry_name").input("page-model")
    at.text_input(key="registry_alias").input("v2")
    at.button(key="FormSubmitter:register_model-Register model").click().run()
    assert "looks like a version" in texts(at) and link_buttons(at) == []

    at.text_input(key="registry_alias").input("champion")
    at.button(key="FormSubmitter:register_model-Register model").click().run()
    assert not at.exception
    shown = texts(at)
    assert "Registering page-model in MLflow" in shown and "uploading 1 path(s) to MLflow" in shown, shown

    assert RegistryWorker(portal.jobs).run_due()
    at.run()
    assert "Registered as page-model version 1 (alias champion) by" in texts(at)
    assert link_buttons(at) == [("page-model v1 in MLflow", f"{mlflow_server.url}/#/models/page-model/versions/1")]
