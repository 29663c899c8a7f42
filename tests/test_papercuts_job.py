"""Issue 15's papercuts of the job page, the dashboard card's download, the token page's snippet and the listed
files: a finished job's header says how long it ran, when it ended and what it cost; only a job that wrote
something offers its results; files sort as a person counts; the workspace lists no portal markers."""

from __future__ import annotations

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import create_token, run_to_end
from tests.test_pages import APP


@pytest.fixture
def app(portal) -> AppTest:
    return AppTest.from_file(APP, default_timeout=30).run()  # the entrypoint first, then switch_page

QUICK = {"epochs": 1, "extra_args": "--seconds-per-epoch 0"}


def job_page(at, job_id: int, tab: str | None = None):
    at.query_params["id"] = str(job_id)
    if tab:
        at.query_params["tab"] = tab
    at.switch_page("pages/job.py").run()
    assert not at.exception
    return at


def finished_job(portal, user, workspace_script, body: str, name: str) -> int:
    job_id = portal.jobs.submit(user, {"name": name, "script": workspace_script(f"{name}.py", body)})
    run_to_end(portal, user, job_id)
    return job_id


def test_a_finished_jobs_header_says_runtime_when_it_ended_and_the_final_cost(app, portal, user):
    job_id = portal.jobs.submit(user, {"name": "done", "script": "train_example.py", **QUICK})
    job = run_to_end(portal, user, job_id)
    metrics = {m.label: m.value for m in job_page(app, job_id).metric}
    assert "Started" not in metrics and "Cost so far" not in metrics and "ETA" not in metrics
    assert metrics["Runtime"].endswith("s")  # "3s"
    assert metrics["Ended"].endswith("ago") or metrics["Ended"] == "just now"
    ended = next(m for m in app.metric if m.label == "Ended")
    assert f"{job.finished_at:%Y-%m-%d %H:%M}" in ended.proto.help  # the moment itself, on hover
    assert metrics["Cost"] == f"${job.cost_total:,.2f}"


def download_buttons(at) -> list[str]:
    return [b.proto.label for b in at.get("link_button") if b.proto.label == "Download results"]


def test_download_results_only_on_a_job_that_wrote_something(app, portal, user, workspace_script):
    quiet = finished_job(portal, user, workspace_script, "print('Loss: 0.5')\n", "quiet")
    wrote = finished_job(portal, user, workspace_script,
                         "import os, pathlib\n"
                         "pathlib.Path(os.environ['PORTAL_OUTPUT_DIR'], 'model.bin').write_bytes(b'w')\n", "wrote")
    at = app
    at.run()
    cards = {b.key.split("-")[1] for b in at.button if b.key and b.key.endswith("-retry")}
    assert cards == {str(quiet), str(wrote)}
    assert len(download_buttons(at)) == 1  # the job that wrote model.bin; none for the quiet one
    (link,) = [b for b in at.get("link_button") if b.proto.label == "Download results"]
    # The one link is the zip of the job that wrote something, a real archive (not a JSON error in a new tab).
    from services.auth import open_link

    _, what = open_link(portal.settings, link.proto.url.removeprefix("/download/"), None)
    assert what == {"job": wrote, "kind": "zip"}


def test_output_files_are_listed_in_natural_order(app, portal, user, workspace_script):
    job_id = finished_job(portal, user, workspace_script,
                          "import os, pathlib\nout = pathlib.Path(os.environ['PORTAL_OUTPUT_DIR'])\n"
                          "for n in (45, 5, 10, 100):\n    (out / f'epoch{n}.pt').write_bytes(b'w')\n", "ckpts")
    at = job_page(app, job_id, "Files")
    shown = [m.value.split("`")[1] for m in at.markdown if m.value.startswith("[`epoch")]
    assert shown == ["epoch5.pt", "epoch10.pt", "epoch45.pt", "epoch100.pt"]


def test_the_token_snippet_names_the_portals_address(app):
    at = app
    at.context = {"url": "https://ml.example.org/portal/tokens"}
    at.switch_page("pages/tokens.py").run()
    at.text_input(key="token_name").input("notebook")
    at.button(key="create_token").click().run()
    snippet = next(c.value for c in at.code if "JobClient" in c.value)
    assert 'cluster_url="https://ml.example.org/portal"' in snippet
    assert "<this portal" not in snippet


def test_the_workspace_api_lists_no_hidden_marker(server):
    token = create_token(server.data_dir, "alice")
    r = httpx.get(f"{server.url}/api/v1/files", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    paths = [f["path"] for f in r.json()["files"]]
    assert "train_example.py" in paths
    assert not [p for p in paths if p.startswith(".") or "/." in p]  # .seeded is the portal's, not a file of yours
