"""Issue 15's papercuts of the Submit page and the API's answers to bad values: uploads refused as they are
chosen, messages in plain sentences, a visible template confirmation, the machine's GPUs said at the field."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from services.backends.local import machine_gpu_count
from services.jobs import machine_gpus_problem
from tests.conftest import PortalServer, create_token

MACHINE_GPUS = machine_gpu_count()
APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")
# What pydantic says in its own voice; none of it may reach a person.
LIBRARY_WORDS = re.compile(r"String should|Input should|should have|Field required|Extra inputs|valid integer|"
                           r"unable to parse|Value error|errors\.pydantic")


@pytest.fixture
def form(portal):
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/submit.py").run()
    assert not at.exception
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def upload(at, filename: str, data: bytes, mime: str = "text/x-python"):
    at.radio(key="f_source").set_value("Upload new script").run()
    at.file_uploader(key="f_upload").upload(filename, data, mime).run()  # chosen; Submit not pressed
    return at


def test_an_oversized_file_is_refused_as_it_is_chosen_and_a_good_one_clears_it(form, portal):
    # 5.1 MB passes the browser's check (Streamlit counts 5 MiB) and is refused by the portal's, on choosing.
    at = upload(form, "big.py", b"#" * 5_100_000)
    assert "the file is 5.1 MB; the limit is 5 MB" in errors(at)
    assert not (portal.settings.workspace_dir / "uploads").exists()  # nothing stored, nothing submitted
    at.file_uploader(key="f_upload").upload("small.py", b"print('Loss: 0.5')\n", "text/x-python").run()
    assert errors(at) == []


def test_the_uploader_itself_takes_only_py_files_up_to_the_portals_limit(form):
    at = upload(form, "ok.py", b"x = 1\n")
    widget = at.get("file_uploader")[0].proto
    # The browser's own check: the widget's "Limit 5MB per file • PY" is the portal's 5 MB, not Streamlit's 200.
    assert widget.max_upload_size_mb == 5
    assert list(widget.type) == [".py"]
    assert "at most 5 MB" in widget.label


def test_an_empty_form_gets_plain_sentences_and_placeholders_that_read_as_examples(form, portal):
    at = form
    for key in ("f_name", "f_dataset_path", "f_extra_args", "f_template_name"):
        assert at.text_input(key=key).placeholder.startswith("e.g. "), key
    at.button(key="submit").click().run()
    assert "give the experiment a name (for example 'gpt-finetune-v2')" in errors(at)
    at.text_input(key="f_name").input("a" * 64).run()
    at.number_input(key="f_epochs").set_value(0)
    at.button(key="submit").click().run()
    assert "must be at most 63 characters" in errors(at)
    assert not [e for e in errors(at) if LIBRARY_WORDS.search(e)]
    assert portal.jobs.list_jobs() == []


def test_save_as_template_says_it_saved_and_stays_open(form, portal):
    at = form
    at.text_input(key="f_template_name").input("lora-base").run()
    at.button(key="save_template").click().run()
    assert [t.name for t in portal.templates.list()] == ["lora-base"]
    assert any("Saved the template 'lora-base'." in t.value for t in at.toast)
    assert "Saved the template 'lora-base'." in [s.value for s in at.success]
    # The first template brings "Start from template" above the form; the expander keeps its place.
    assert at.selectbox(key="f_template") is not None


def test_a_template_with_a_bad_value_names_the_field_in_a_plain_sentence(form, portal):
    at = form
    at.number_input(key="f_learning_rate").set_value(0.0)
    at.text_input(key="f_template_name").input("bad").run()
    at.button(key="save_template").click().run()
    assert "Learning rate: must be greater than 0" in errors(at)
    assert portal.templates.list() == []


def test_a_machine_without_gpus_says_so_at_the_field_and_refuses_gpus(form, portal):
    portal.jobs.backend.machine_gpus = 0  # what NVML counts on this test machine, made explicit
    at = form
    at.run()
    assert "This machine has no GPU: jobs run on its CPU." in [c.value for c in at.caption]
    at.text_input(key="f_name").input("wants-gpus")
    at.number_input(key="f_gpus").set_value(2).run()
    assert "this machine has no GPU: set GPUs to 0 (the job runs on its CPU)" in errors(at)
    assert at.metric[0].value == "–"  # no price for GPUs this machine cannot give
    at.button(key="submit").click().run()
    assert portal.jobs.list_jobs() == []


def test_a_machine_with_gpus_says_how_many_and_prices_what_it_has(form, portal):
    portal.jobs.backend.machine_gpus = 2
    at = form
    at.run()
    assert "This machine has 2 GPUs." in [c.value for c in at.caption]
    at.number_input(key="f_gpus").set_value(2).run()
    assert at.metric[0].value == "$5.40/hour"  # 0.40 + 2 x 2.50
    at.number_input(key="f_gpus").set_value(3).run()
    assert "this machine has 2 GPUs: ask for at most 2" in errors(at)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    srv = PortalServer(tmp_path_factory.mktemp("api") / "portal-data").start()
    yield srv, {"Authorization": f"Bearer {create_token(srv.data_dir, 'alice')}"}
    srv.stop()


@pytest.mark.parametrize(("body", "field", "sentence"), [
    ({"name": "", "script": "train_example.py"}, "name", "give the experiment a name (for example 'gpt-finetune-v2')"),
    ({"name": "x", "script": "train_example.py", "epochs": "ten"}, "epochs", "must be a whole number, such as 10"),
    ({"name": "x", "script": "train_example.py", "learning_rate": "fast"}, "learning_rate",
     "must be a number, such as 0.001"),
    ({"name": "x", "script": "train_example.py", "mixed_precision": "maybe"}, "mixed_precision",
     "must be true or false"),
    ({"name": "x", "script": "train_example.py", "lr": 0.1}, "lr",
     "is not a field the portal knows (check its spelling)"),
    ({"name": "x"}, "script", "is required"),
    # One GPU more than this machine has (none on a laptop): said as the machine's count.
    ({"name": "x", "script": "train_example.py", "gpus": MACHINE_GPUS + 1}, "gpus", machine_gpus_problem(MACHINE_GPUS)),
])
def test_the_api_answers_bad_values_in_plain_sentences(api, body, field, sentence):
    srv, headers = api
    r = httpx.post(f"{srv.url}/api/v1/jobs", headers=headers, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["problems"][field] == sentence
    assert not LIBRARY_WORDS.search(r.text)


def test_the_api_answers_a_bad_template_value_in_a_plain_sentence(api):
    srv, headers = api
    r = httpx.post(f"{srv.url}/api/v1/templates", headers=headers,
                   json={"name": "t", "values": {"epochs": "many", "gpus": -1}})
    assert r.status_code == 422, r.text
    assert r.json()["problems"] == {"epochs": "must be a whole number, such as 10", "gpus": "must be 0 or more"}


def test_the_api_answers_a_bad_history_view_in_plain_sentences(api):
    srv, headers = api
    r = httpx.get(f"{srv.url}/api/v1/history", headers=headers, params={"date_from": "yesterday", "page": "0"})
    assert r.status_code == 422, r.text
    assert r.json()["problems"] == {"date_from": "must be a date such as 2026-01-31", "page": "must be 1 or more"}
