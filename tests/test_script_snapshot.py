"""The Script tab: the script a job ran as snapshotted at submit, diffed against the workspace file of its name and
against another job's snapshot; the same over the API. A snapshot a job replaced by a link is never followed."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from streamlit.testing.v1 import AppTest

from tests.conftest import PortalServer, create_token, run_to_end, wait_until

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
V1 = "import os\nprint('Epoch 1/1')\nprint('Loss: 0.5')\n"
V2 = V1.replace("0.5", "0.25") + "print('done')\n"


def script_tab(job_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.query_params["id"] = str(job_id)
    at.query_params["tab"] = "Script"
    at.switch_page("pages/job.py").run()
    assert not at.exception
    return at


def submitted(portal, user, workspace_script, name: str, body: str, file: str = "mine.py") -> int:
    job_id = portal.jobs.submit(user, {"name": name, "script": workspace_script(file, body), "epochs": 1})
    run_to_end(portal, user, job_id)
    return job_id


def test_the_tab_shows_the_snapshot_and_its_diff_with_the_edited_workspace_file(portal, user, workspace_script):
    job_id = submitted(portal, user, workspace_script, "snap", V1)
    at = script_tab(job_id)
    assert at.code[0].value == V1.rstrip("\n") and at.code[0].language == "python"
    assert any("Identical" in s.value for s in at.success)  # the workspace file has not changed yet

    workspace_script("mine.py", V2)  # edited after the job ran
    at = script_tab(job_id)
    assert at.code[0].value == V1.rstrip("\n"), "the job's script is what it ran, not the file as it is now"
    diff = at.code[1].value
    assert at.code[1].language == "diff"
    assert f"--- job #{job_id}: mine.py" in diff and "+++ workspace: mine.py" in diff
    assert "-print('Loss: 0.5')" in diff and "+print('Loss: 0.25')" in diff and "+print('done')" in diff
    assert not at.success

    (portal.settings.workspace_dir / "mine.py").unlink()
    at = script_tab(job_id)
    assert "There is no 'mine.py' in your workspace now to compare with." in [i.value for i in at.info]


def test_diff_against_another_job_picked_or_typed(portal, user, workspace_script):
    first = submitted(portal, user, workspace_script, "first", V1)
    second = submitted(portal, user, workspace_script, "second", V2)
    at = script_tab(second)
    at.segmented_control(key="script_against").set_value("Another job's script").run()
    picker = at.selectbox(key="script_other")
    assert picker.options == [f"#{first} first"]  # the user's recent jobs, this one left out
    picker.select(first).run()
    diff = at.code[1].value
    assert f"--- job #{second}: mine.py" in diff and f"+++ job #{first}: mine.py" in diff
    assert "-print('done')" in diff

    at.text_input(key="script_other_id").input("999").run()
    assert "Job 999 was not found." in [i.value for i in at.info]
    at.text_input(key="script_other_id").input("abc").run()
    assert any("is not a job id" in e.value for e in at.error)
    at.text_input(key="script_other_id").input(f"#{first}").run()  # as a person may type it
    assert "-print('done')" in at.code[1].value


def test_a_snapshot_swapped_for_a_link_is_not_followed(portal, user, workspace_script, tmp_path):
    job_id = submitted(portal, user, workspace_script, "swapped", V1)
    secret = tmp_path / "secret.txt"
    secret.write_text("the portal's secret\n")
    snapshot = portal.settings.jobs_dir / str(job_id) / "script" / "mine.py"
    snapshot.unlink()
    os.symlink(secret, snapshot)  # what a job that may write its own folder could do
    at = script_tab(job_id)
    assert not [c for c in at.code if "secret" in c.value]
    assert any("is not kept" in i.value for i in at.info)


def test_the_script_api(tmp_path: Path):
    from tests.test_client import local_user_name

    srv = PortalServer(tmp_path / "portal-data").start()
    try:
        api = f"{srv.url}/api/v1"
        mine = {"Authorization": f"Bearer {create_token(srv.data_dir, local_user_name())}"}
        (srv.data_dir / "workspace" / "mine.py").write_text(V1)
        with httpx.Client(headers=mine, timeout=30) as http:
            one = http.post(f"{api}/jobs", json={"name": "one", "script": "mine.py", "epochs": 1}).json()["id"]
            wait_until(lambda: http.get(f"{api}/jobs/{one}/status").json()["finished"], interval=0.2)
            (srv.data_dir / "workspace" / "mine.py").write_text(V2)
            two = http.post(f"{api}/jobs", json={"name": "two", "script": "mine.py", "epochs": 1}).json()["id"]
            wait_until(lambda: http.get(f"{api}/jobs/{two}/status").json()["finished"], interval=0.2)

            r = http.get(f"{api}/jobs/{one}/script")
            assert r.status_code == 200 and r.text == V1 and r.headers["content-type"].startswith("text/plain")
            same = http.get(f"{api}/jobs/{two}/script/diff", params={"against": "workspace"}).json()
            assert same["identical"] is True and same["diff"] == ""
            changed = http.get(f"{api}/jobs/{one}/script/diff").json()  # the workspace by default
            assert changed["identical"] is False and "+print('done')" in changed["diff"]
            other = http.get(f"{api}/jobs/{one}/script/diff", params={"against": str(two)}).json()
            assert other["to"] == f"job #{two}: mine.py" and "+print('Loss: 0.25')" in other["diff"]
            for against, status in (("nonsense", 400), ("0", 400), ("99999", 404)):
                r = http.get(f"{api}/jobs/{one}/script/diff", params={"against": against})
                assert r.status_code == status and r.json()["error"], (against, r.text)
            assert http.get(f"{api}/jobs/99999/script").json()["error"] == "Job 99999 was not found."
    finally:
        srv.stop()
