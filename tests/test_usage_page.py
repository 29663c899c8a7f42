"""The Usage page under AppTest: this month's cost and GPU-hours of a real run as metrics, two bar charts (SVG bars,
not WebGL), the table, the CSV download and the budget's bar; an admin sets a price, a bad month gets a sentence."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pages.common import money
from services.usage import UsageService
from tests.conftest import run_to_end
from tests.test_costs import SLEEP

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


def test_usage_page_shows_charts_table_csv_and_budget(portal, user, workspace_script):
    script = workspace_script("sleep.py", SLEEP)
    usage = UsageService.of(portal.jobs)
    usage.set_price(user, {"gpu_type": "local", "gpu_hour": 0, "node_hour": 3600, "effective_from": "2020-01-01"})
    done = run_to_end(portal, user, portal.jobs.submit(user, {"name": "paid", "script": script,
                                                               "extra_args": "--seconds 0.3"}))
    usage.set_budget(user, {"scope": "user", "name": user.name, "monthly_limit": 50})
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/usage.py").run()
    assert not at.exception
    assert at.title[0].value == "Usage"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Jobs"] == "1" and metrics["Cost"] == money(done.cost_total) and done.cost_total > 0
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [c["data"][0]["type"] for c in charts] == ["bar", "bar"]
    assert charts[0]["layout"]["title"]["text"] == "Cost by month"
    assert at.get("download_button")[0].proto.label == "Download CSV"
    bars = [e.proto.text for e in at.get("progress")]
    assert bars == [f"User {user.name}: {money(done.cost_total)} of $50.00 used, {money(50 - done.cost_total)} left"
                    " · at 100 % new jobs are refused"]

    at.text_input(key="p_from").set_value("2020-01-01")
    at.number_input(key="p_gpu").set_value(9.0)
    at.button[[b.label for b in at.button].index("Save price")].click().run()
    assert not at.exception
    assert [p["gpu_hour"] for p in usage.prices()] == [9.0, 0.0]  # newest first

    at.text_input[0].set_value("2026-13")
    at.button[[b.label for b in at.button].index("Show")].click().run()
    assert [e.value for e in at.error] == ["From month: a month like 2026-12 (or a date like 2026-12-01)"]


def test_submit_form_says_the_ceiling_and_what_is_left_and_refuses_past_it(portal, user):
    usage = UsageService.of(portal.jobs)
    usage.set_budget(user, {"scope": "user", "name": user.name, "monthly_limit": 5})
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.switch_page("pages/submit.py").run()
    hours = portal.settings.default_runtime_hours
    ceiling = hours * portal.settings.node_price_per_hour  # no GPU on this machine: the node's price alone
    assert f"This job may cost up to {money(ceiling)} ({hours:g} h × 0 GPUs); you have $5.00 left this month." in [
        c.value for c in at.caption]
    at.number_input(key="f_max_runtime_hours").set_value(20.0).run()
    sentence = (f"This job may cost up to {money(20 * portal.settings.node_price_per_hour)} (20 h × 0 GPUs); you have "
                "$5.00 left this month: the job is refused, since it may cost more than is left.")
    assert [w.value for w in at.warning] == [sentence]
    at.text_input(key="f_name").set_value("too-long").run()
    at.button(key="submit").click().run()
    assert sentence in [e.value for e in at.error]
    assert portal.jobs.list_jobs() == []  # nothing was submitted
