"""The history's search takes the parameter names people type (lr=, bs=, epochs=), and its table reads as a person
reads it: dates, cost in the portal's currency, names that open the job, columns that fit the box."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest
from streamlit.testing.v1 import AppTest

from services.history import HistoryQuery
from services.portal import get_portal, reset_portal
from tests.test_history import VERA, seeded
from tests.test_pages import APP


def test_the_short_parameter_names_find_exactly_that_value(any_portal):
    seeded(any_portal)
    h = any_portal.history

    def found(search: str) -> list:
        return h.page(VERA, HistoryQuery(search=search, page_size=100))

    by_lr = found("lr=0.001")
    assert by_lr and all(j.request["learning_rate"] == 0.001 for j in by_lr)
    assert [j.id for j in by_lr] == [j.id for j in found("learning_rate=0.001")] == [j.id for j in found("LR=1e-3")]
    everyone = found("")
    assert len(by_lr) == len([j for j in everyone if j.request["learning_rate"] == 0.001])
    # A value is that value, not a prefix of a longer one: bs=3 is no batch size of 32.
    by_bs = found("bs=32")
    assert by_bs and all(j.request["batch_size"] == 32 for j in by_bs)
    assert len(by_bs) == len([j for j in everyone if j.request["batch_size"] == 32])
    assert found("bs=3") == [] and found("batch_size=3") == []
    assert len(found("epochs=10")) == 40 and found("epochs=1") == []
    # With other words, and in the summary strip.
    assert h.summary(VERA, HistoryQuery(search="bob lr=0.001")).jobs == len([j for j in by_lr if j.owner == "bob"])
    # Any other parameter is still a text match.
    assert len(found("max_runtime_hours=8")) == 40


def test_the_search_hint_example_finds_its_jobs(portal):
    seeded(portal)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py").run()
    hint = at.text_input(key="h_q").placeholder
    assert "lr=0.001" in hint and "bs=" in hint
    at.text_input(key="h_q").input("lr=0.001").run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert len(frame) > 0 and set(frame["learning rate"]) == {0.001}


@pytest.fixture
def euro_portal(data_dir, monkeypatch):
    monkeypatch.setenv("PORTAL_CURRENCY", "€")
    reset_portal()
    yield get_portal()
    reset_portal()


def test_the_history_table_reads_as_a_person_reads_it(euro_portal):
    seeded(euro_portal)
    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page("pages/history.py").run()
    assert not at.exception
    table = at.dataframe[0]
    config = json.loads(table.proto.columns)
    # Dates as words and a clock, not 2026-12-02T01:22:25.468409+00:00.
    assert config["created"]["type_config"] == {"type": "datetime", "format": "D MMM YYYY, HH:mm"}
    # Cost in the portal's currency, kept a number so the column still sorts.
    assert config["cost"]["type_config"] == {"type": "number", "format": "€%.2f"}
    # The name opens the job page and shows the name.
    assert config["name"]["type_config"]["type"] == "link"
    shown = config["name"]["type_config"]["display_text"]
    frame = table.value
    first = frame.iloc[0]
    assert first["name"].startswith(f"/job?id={first['id']}#")
    assert re.fullmatch(r"exp-\d{7}", unquote(first["name"].split("#", 1)[1]))
    assert shown == "#(.*)$"
    # Every default column has a width, and they add up to less than a laptop's wide page beside the sidebar.
    widths = [config[c]["width"] for c in frame.columns]
    assert all(isinstance(w, int) for w in widths) and sum(widths) < 1000
