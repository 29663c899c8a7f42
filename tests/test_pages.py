"""Each page under Streamlit's AppTest: what a researcher sees and does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.models import JobStatus
from services.store.seed import seed_jobs
from tests.conftest import run_to_end

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


@pytest.fixture
def app(portal):
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception
    return at


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    parts += [i.value for i in at.info] + [s.value for s in at.subheader] + [t.value for t in at.title]
    parts += [w.value for w in at.warning] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def open_submit(at):
    at.switch_page("pages/submit.py").run()
    assert not at.exception
    return at


# Submit ------------------------------------------------------------------------------------------
def test_bad_submission_shows_messages_at_the_fields_and_submits_nothing(app, portal):
    at = open_submit(app)
    at.text_input(key="f_name").input("My Run")
    at.number_input(key="f_learning_rate").set_value(0.0)
    at.number_input(key="f_epochs").set_value(-3)
    at.number_input(key="f_gpus").set_value(99)
    at.button(key="submit").click().run()
    errors = [e.value for e in at.error]
    assert "The job was not submitted: please fix the fields marked below." in errors
    assert any("lower-case letters" in e for e in errors)
    assert errors.count("must be greater than 0") == 2
    assert any("at most 8 GPUs" in e for e in errors)
    assert portal.jobs.list_jobs() == []
    assert at.title[0].value == "Submit training job"  # still on the form, values kept
    assert at.text_input(key="f_name").value == "My Run"


def test_empty_and_too_long_names(app, portal):
    at = open_submit(app)
    at.button(key="submit").click().run()
    assert any("give the experiment a name" in e.value for e in at.error)
    at.text_input(key="f_name").input("a" * 64).run()
    at.button(key="submit").click().run()
    assert any("at most 63 characters" in e.value for e in at.error)
    assert portal.jobs.list_jobs() == []


def submit_upload(at, filename: str, data: bytes, mime: str):
    at.file_uploader(key="f_upload").upload(filename, data, mime).run()
    at.button(key="submit").click().run()
    return at


def upload_form(app, name: str):
    at = open_submit(app)
    at.text_input(key="f_name").input(name)
    at.radio(key="f_source").set_value("Upload new script").run()
    return at


def test_upload_that_is_not_python_or_too_big_is_refused(app, portal, monkeypatch):
    at = upload_form(app, "upload-test")
    # A .txt never reaches the portal: the uploader takes only .py (tests/e2e/test_papercuts_browser.py).
    submit_upload(at, "huge.py", b"x = 1\n" * 1_000_000, "text/x-python")
    assert any("the limit is 5 MB" in e.value for e in at.error)
    assert portal.jobs.list_jobs() == []


def test_good_upload_is_submitted_and_opens_the_job_page(app, portal, user):
    at = submit_upload(upload_form(app, "uploaded"), "my_train.py", b"print('Loss: 0.5')\n", "text/x-python")
    assert not at.exception
    jobs = portal.jobs.list_jobs()
    assert [j.name for j in jobs] == ["uploaded"]
    assert jobs[0].request["script"] == "uploads/my_train.py"
    assert at.query_params["id"] == [str(jobs[0].id)] or at.query_params["id"] == str(jobs[0].id)
    assert at.title[0].value == "uploaded"
    run_to_end(portal, user, jobs[0].id)


def test_cost_estimate_follows_the_resources(app, portal):
    portal.jobs.backend.machine_gpus = 4  # a local machine with 4 GPUs (without them there is no price for GPUs)
    at = open_submit(app)
    assert at.metric[0].value == "$0.40/hour"  # one node, no GPU
    at.number_input(key="f_gpus").set_value(4).run()
    at.number_input(key="f_nodes").set_value(1).run()
    assert at.metric[0].value == "$10.40/hour"  # 1 x (0.40 + 4 x 2.50)


def test_multi_node_is_explained_on_the_local_backend(app, portal):
    at = open_submit(app)
    at.text_input(key="f_name").input("multi")
    at.number_input(key="f_nodes").set_value(2)
    at.button(key="submit").click().run()
    assert any("multi-node jobs need the Kubernetes backend" in e.value for e in at.error)
    assert portal.jobs.list_jobs() == []


def test_clone_opens_submit_prefilled(app, portal, user):
    job_id = portal.jobs.submit(user, {"name": "orig", "script": "train_example.py", "epochs": 1,
                                       "learning_rate": 0.05, "batch_size": 7,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    app.query_params["clone"] = str(job_id)
    at = open_submit(app)
    assert at.text_input(key="f_name").value == "orig-clone"
    assert at.number_input(key="f_learning_rate").value == 0.05
    assert at.number_input(key="f_batch_size").value == 7
    assert at.text_input(key="f_extra_args").value == "--seconds-per-epoch 0"


# Dashboard ---------------------------------------------------------------------------------------
def test_empty_dashboard_points_to_submit(app):
    assert "No jobs yet" in texts(app)


def test_dashboard_sections_filters_search_and_load_more(app, portal, user):
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 25, owner=user.name, status=JobStatus.SUCCEEDED)
    seed_jobs(engine, 3, owner=user.name, status=JobStatus.FAILED, seed=1)
    at = app
    at.run()
    body = texts(at)
    assert "✅ Completed (25)" in body and "❌ Failed (3)" in body

    def cards():
        return len([b for b in at.button if b.key and b.key.startswith("SUCCEEDED-") and b.key.endswith("-retry")])

    assert cards() == 5  # every section on screen: half a page each
    at.button(key="more_SUCCEEDED").click().run()
    assert cards() == 10
    at.segmented_control(key="dash_filter").set_value("Completed").run()
    assert cards() == 10  # one section: a full page (the loaded-more count is kept)
    at.button(key="more_SUCCEEDED").click().run()
    assert cards() == 20
    # Filter: only the failed section.
    at.segmented_control(key="dash_filter").set_value("Failed").run()
    body = texts(at)
    assert "❌ Failed (3)" in body and "Completed (25)" not in body
    # Search narrows the counts and the cards.
    at.segmented_control(key="dash_filter").set_value("All").run()
    at.text_input(key="dash_search").input("exp-0000024").run()
    body = texts(at)
    assert "✅ Completed (1)" in body and "Failed" not in body.split("Completed")[1]


def test_dashboard_card_actions(app, portal, user):
    job_id = portal.jobs.submit(user, {"name": "card", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    at = app
    at.run()
    assert "card" in texts(at) or any(p.label == "**card**" for p in at.get("page_link"))
    at.button(key=f"SUCCEEDED-{job_id}-delete").click().run()
    assert "cannot be undone" in texts(at)
    at.button(key=f"SUCCEEDED-{job_id}-confirm").click().run()
    assert portal.jobs.list_jobs() == []
    assert "Deleted card." in texts(at)


def test_running_card_has_stop_and_stop_works(app, portal, user, workspace_script):
    s = workspace_script("loop.py", "import time\nfor i in range(600):\n    print(f'Epoch {i}/600', flush=True)\n"
                                    "    time.sleep(0.1)\n")
    job_id = portal.jobs.submit(user, {"name": "runner", "script": s})
    from tests.conftest import wait_until

    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, job_id).status is JobStatus.RUNNING)[1])
    at = app
    at.run()
    assert "🟢 Running (1)" in texts(at)
    at.button(key=f"ACTIVE-{job_id}-stop").click().run()
    assert run_to_end(portal, user, job_id).status is JobStatus.STOPPED


# Job page ----------------------------------------------------------------------------------------
def test_job_page_tabs(app, portal, user):
    job_id = portal.jobs.submit(user, {"name": "tabs", "script": "train_example.py", "epochs": 2,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    at = app
    at.query_params["id"] = str(job_id)
    at.switch_page("pages/job.py").run()
    assert not at.exception
    assert at.title[0].value == "tabs"
    assert [t.label for t in at.tabs] == ["Logs", "Metrics", "Config", "Files", "Script"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"].endswith("Succeeded") and metrics["Progress"] == "Epoch 2/2"
    # Logs tab (default): the tail of the log.
    assert "Training finished" in at.get("html")[0].proto.body
    # Metrics tab: a Plotly chart per series, loss first.
    at.query_params["tab"] = "Metrics"
    at.run()
    charts = at.get("plotly_chart")
    assert len(charts) >= 2 and '"loss"' in charts[0].proto.spec
    # Config: the request and the exact spec.
    at.query_params["tab"] = "Config"
    at.run()
    shown = "\n".join(j.proto.body for j in at.json)
    assert '"epochs": 2' in shown and '"argv"' in shown
    # Files: what the job wrote, each a download link.
    at.query_params["tab"] = "Files"
    at.run()
    assert "[`model.json`](/download/" in texts(at)


def test_job_page_for_unknown_id_says_so(app):
    app.query_params["id"] = "999"
    app.switch_page("pages/job.py").run()
    assert not app.exception
    assert "No job with id '999'." in [e.value for e in app.error]


def test_history_lists_jobs(app, portal, user):
    seed_jobs(portal.jobs.sessions.kw["bind"], 60, owner=user.name, status=JobStatus.SUCCEEDED)
    app.switch_page("pages/history.py").run()
    assert not app.exception
    df = app.dataframe[0].value
    # The name column holds the job's link; the table shows the name that follows its "#".
    assert len(df) == 50 and df.iloc[0]["name"].endswith("#exp-0000059")


def test_every_page_shows_one_banner_when_the_cluster_is_unreachable(tmp_path, monkeypatch):
    """No cluster needed: a kubeconfig that points at a closed port is a cluster that is down."""
    from services.portal import get_portal, reset_portal
    from tests.conftest import wait_until

    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: down\n"
        "clusters: [{name: down, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: down, context: {cluster: down, user: u}}]\n"
    )
    monkeypatch.setenv("PORTAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PORTAL_BACKEND", "kubernetes")
    monkeypatch.setenv("PORTAL_KUBECONFIG", str(kubeconfig))
    reset_portal()
    try:
        portal = get_portal()
        portal.sync.start()
        wait_until(lambda: portal.jobs.backend.health() is not None, timeout=30)
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception
        banners = [w.value for w in at.warning if "The cluster is not available" in w.value]
        assert len(banners) == 1 and "history is still here" in banners[0]
        assert at.title[0].value == "My experiments"  # the history stays browsable
    finally:
        reset_portal()


# Identity, ownership, templates and tokens ---------------------------------------------------------
def test_dashboard_shows_my_jobs_with_an_everyone_switch(app, portal, user):
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 2, owner=user.name, status=JobStatus.SUCCEEDED)
    seed_jobs(engine, 3, owner="someone-else", status=JobStatus.FAILED, seed=1)
    at = app
    at.run()
    assert "My experiments" in texts(at) and "✅ Completed (2)" in texts(at) and "Failed (3)" not in texts(at)
    first = AppTest.from_file(APP, default_timeout=30).run()  # AppTest keeps sidebar elements of a first run only
    assert any("Single-user mode: you are" in c.value for c in first.get("caption"))
    at.toggle(key="dash_everyone").set_value(True).run()
    assert "All experiments" in texts(at) and "❌ Failed (3)" in texts(at)


def test_others_jobs_are_read_only_for_a_researcher(portal, monkeypatch):
    from services.models import User

    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 1, owner="alice", status=JobStatus.SUCCEEDED)
    job_id = portal.jobs.list_jobs()[0].id
    # The portal's single user is an admin of their own laptop; here they are a plain researcher "bob".
    monkeypatch.setattr("pages.common.current_user", lambda *a, **k: User("bob"))
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.toggle(key="dash_everyone").set_value(True).run()
    keys = {b.key for b in at.button}
    assert f"SUCCEEDED-{job_id}-clone" in keys
    assert not {f"SUCCEEDED-{job_id}-retry", f"SUCCEEDED-{job_id}-delete"} & keys
    at.switch_page("pages/job.py")
    at.query_params["id"] = str(job_id)
    at.run()
    assert "alice's job: read-only." in texts(at)
    assert not {"retry", "delete", "stop"} & {b.key for b in at.button}


def test_templates_are_saved_and_fill_the_form(app, portal):
    at = open_submit(app)
    at.number_input(key="f_epochs").set_value(42)
    at.number_input(key="f_learning_rate").set_value(0.02)
    at.text_input(key="f_template_name").input("long-run")
    at.button(key="save_template").click().run()
    assert "Saved the template 'long-run'." in texts(at)
    assert portal.templates.get_by_name("long-run").values["epochs"] == 42
    # A fresh session starts from it.
    fresh = open_submit(AppTest.from_file(APP, default_timeout=30))
    fresh.run()
    fresh.text_input(key="f_name").input("from-template")
    fresh.selectbox(key="f_template").set_value("long-run").run()
    assert fresh.number_input(key="f_epochs").value == 42 and fresh.text_input(key="f_name").value == "from-template"
    # A bad template name is a sentence next to the field.
    fresh.text_input(key="f_template_name").input("   ")
    fresh.button(key="save_template").click().run()
    assert "give the template a name" in texts(fresh)
    # The job keeps the template's name (the history filters by it).
    fresh.button(key="submit").click().run()
    made = [j for j in portal.jobs.list_jobs() if j.name == "from-template"]
    assert made and made[0].request["template"] == "long-run"


def test_api_tokens_page_creates_shows_once_and_revokes(app, portal, user):
    at = app
    at.switch_page("pages/tokens.py").run()
    assert not at.exception and "You have no tokens yet." in texts(at)
    at.text_input(key="token_name").input("notebook")
    at.button(key="create_token").click().run()
    secret = at.code[0].value
    assert secret.startswith("mlp_") and portal.tokens.authenticate(secret).name == user.name
    at.run()
    assert not [c for c in at.code if c.value.startswith("mlp_")], "the token is shown only once"
    (token,) = portal.tokens.list(user)
    at.button(key=f"revoke-{token.id}").click().run()
    assert portal.tokens.authenticate(secret) is None and "revoked" in texts(at)


def test_oidc_mode_asks_to_sign_in_and_shows_nothing_else(portal):
    portal.settings.auth_mode = "oidc"
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert "My experiments" not in texts(at)


def test_proxy_mode_without_the_proxys_header_shows_a_sentence(portal):
    portal.settings.auth_mode = "proxy"
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "did not receive your identity" in texts(at) and "My experiments" not in texts(at)


def n_points(values) -> int:
    """Points of a Plotly array, which Plotly may ship as typed binary data."""
    if isinstance(values, list):
        return len(values)
    import base64

    import numpy as np

    return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize


def test_compare_three_runs_overlays_curves_and_shows_the_parameter_diff(portal, user):
    ids = []
    for lr in (0.001, 0.01, 0.1):
        job_id = portal.jobs.submit(user, {"name": f"lr-{str(lr).replace('.', '-')}", "script": "train_example.py",
                                           "epochs": 3, "learning_rate": lr, "extra_args": "--seconds-per-epoch 0"})
        run_to_end(portal, user, job_id)
        ids.append(job_id)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/compare.py")
    at.query_params["ids"] = ",".join(map(str, ids))
    at.run()
    assert not at.exception
    charts = {c.proto.id: c.proto.spec for c in at.get("plotly_chart")}
    import json

    specs = [json.loads(spec) for spec in charts.values()]
    loss = next(s for s in specs if s["layout"].get("title", {}).get("text") == "loss")
    assert [t["name"] for t in loss["data"]] == [f"lr-{str(lr).replace('.', '-')} #{i}"
                                                for lr, i in zip((0.001, 0.01, 0.1), ids, strict=True)]
    assert all(n_points(t["x"]) == 3 for t in loss["data"]), "three epochs per run"
    assert any(s["layout"].get("shapes") and len(s["data"]) == 3 for s in specs), "parallel coordinates: a line a run"
    assert "1 of 12 parameters differ" in texts(at)
    frames = at.dataframe
    params = next(f.value for f in frames if "learning_rate" in list(f.value.index))
    assert list(params.loc["learning_rate"]) == ["0.001", "0.01", "0.1"]
    # The selection is the URL: the same address reopens the same view.
    again = AppTest.from_file(APP, default_timeout=30)
    again.switch_page("pages/compare.py")
    again.query_params["ids"] = ",".join(map(str, ids))
    again.run()
    assert again.multiselect(key="cmp_pick").value == ids


def test_compare_picks_from_the_dashboard(app, portal, user):
    engine = portal.jobs.sessions.kw["bind"]
    seed_jobs(engine, 3, owner=user.name, status=JobStatus.SUCCEEDED)
    at = app
    at.run()
    ids = [j.id for j in portal.jobs.list_jobs()][:2]
    for job_id in ids:
        at.checkbox(key=f"SUCCEEDED-{job_id}-cmp").check().run()
    link = next(p for p in at.get("page_link") if "Compare 2 runs" in p.proto.label)
    assert "compare" in link.proto.page


def test_gpu_figures_say_not_configured_rather_than_zero(app, portal, user):
    seed_jobs(portal.jobs.sessions.kw["bind"], 1, owner=user.name, status=JobStatus.RUNNING)
    at = app
    at.run()
    assert "GPU metrics not configured" in texts(at) and "GPU 0%" not in texts(at)
    at.switch_page("pages/job.py")
    at.query_params.update({"id": "1", "tab": "Metrics"})
    at.run()
    assert any("GPU metrics not configured" in i.value for i in at.info)


def test_gpu_percent_graphs_and_idle_badge_from_samples(portal, user, monkeypatch):
    import time

    seed_jobs(portal.jobs.sessions.kw["bind"], 1, owner=user.name, status=JobStatus.RUNNING)
    monkeypatch.setattr(portal, "telemetry", object())  # a configured source; the samples below are what it read
    t0 = time.time() - 3600
    portal.jobs.record_gpu({1: (85.0, 40_960.0)}, t0, idle_percent=10)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert "GPU 85% · 40.0 GiB" in texts(at) and "idle GPUs" not in texts(at)
    for minutes in (5, 20, 30):  # below 10 % for 25 minutes
        portal.jobs.record_gpu({1: (3.0, 1024.0)}, t0 + minutes * 60, idle_percent=10)
    at.run()
    assert "idle GPUs" in texts(at)  # st.badge is drawn as a markdown badge
    at.switch_page("pages/job.py")
    at.query_params.update({"id": "1", "tab": "Metrics"})
    at.run()
    assert any("Idle GPUs" in w.value for w in at.warning)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert {"GPU utilisation (%)", "GPU memory (MiB)"} <= set(titles)
