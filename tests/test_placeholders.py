"""Issue 15, defect 9: a placeholder reads as a hint ("e.g. baseline lora"), never as a value already typed in."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import run_to_end
from tests.test_pages import APP


def test_the_tags_and_metric_filter_placeholders_read_as_examples(portal, user):
    job_id = portal.jobs.submit(user, {"name": "hints", "script": "train_example.py", "epochs": 1,
                                       "extra_args": "--seconds-per-epoch 0"})
    run_to_end(portal, user, job_id)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.query_params["id"] = str(job_id)
    at.switch_page("pages/job.py").run()
    assert not at.exception
    assert at.text_input(key="job_tags").placeholder == "e.g. baseline lora"
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert at.text_input(key="h_metrics").placeholder.startswith("e.g. accuracy > 0.9")
    at.switch_page("pages/dashboard.py").run()
    assert at.text_input(key="dash_search").placeholder == "Search by name, owner or script"
