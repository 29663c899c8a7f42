"""The Done-when path in a real headless Chromium: submit from the form, watch it live, stop another,
restart the portal, and find both again with their logs and charts."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import expect

from tests.conftest import PortalServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium for the browser tests (apt-get install chromium)")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def wait_for_app(page) -> None:
    page.wait_for_timeout(250)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=30_000
    )


def submit_from_form(page, base: str, name: str, epochs: int, seconds_per_epoch: float) -> int:
    page.goto(f"{base}/submit")
    wait_for_app(page)
    page.get_by_role("textbox", name="Experiment name", exact=True).fill(name)
    epochs_box = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs_box.fill(str(epochs))
    epochs_box.press("Tab")
    args = page.get_by_role("textbox", name="Additional args", exact=True)
    args.fill(f"--seconds-per-epoch {seconds_per_epoch}")
    args.press("Tab")
    wait_for_app(page)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/job\?id=\d+"), timeout=30_000)
    wait_for_app(page)
    return int(re.search(r"id=(\d+)", page.url).group(1))


def log_text(page) -> str:
    return page.locator(".plog").first.inner_text()  # the Logs tab's pane (pages/job_logs.py draws it)


def test_submit_watch_stop_restart(browser, tmp_path):
    server = PortalServer(tmp_path / "portal-data").start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        base = server.url

        # 1. Submit the example from the form; the job page opens and its log pane moves by itself.
        job1 = submit_from_form(page, base, "browser-demo", epochs=12, seconds_per_epoch=1.0)
        log_pane = page.locator(".plog").first
        expect(log_pane).to_contain_text("Epoch 2/12", timeout=30_000)
        first = log_text(page)
        expect(log_pane).to_contain_text("Epoch 4/12", timeout=30_000)  # no reload: the fragment polls
        assert log_text(page) != first

        # 2. The loss chart on the Metrics tab gains points while the job runs.
        page.get_by_role("tab", name="Metrics").click()
        wait_for_app(page)
        chart = page.locator(".js-plotly-plot").first
        chart.wait_for(timeout=30_000)

        def loss_points() -> int:
            return page.evaluate(
                "() => { const el = document.querySelector('.js-plotly-plot');"
                " return el && el._fullData ? el._fullData[0].x.length : 0; }"
            )

        n0 = loss_points()
        page.wait_for_function(
            f"() => {{ const el = document.querySelector('.js-plotly-plot');"
            f" return el && el._fullData && el._fullData[0].x.length > {n0}; }}", timeout=30_000,
        )

        # 3. On the dashboard it is shown as running.
        page.goto(f"{base}/")
        wait_for_app(page)
        page.get_by_text(re.compile(r"Running \(1\)")).first.wait_for(timeout=15_000)
        page.get_by_text("browser-demo").first.wait_for(timeout=15_000)
        page.get_by_role("button", name="Stop").first.wait_for(timeout=15_000)

        # 4. A second job, stopped from its page.
        job2 = submit_from_form(page, base, "to-be-stopped", epochs=500, seconds_per_epoch=0.5)
        expect(page.locator(".plog").first).to_contain_text("Epoch 2/500", timeout=30_000)
        page.get_by_role("button", name="Stop job").click()
        page.get_by_text("Stopped by user").first.wait_for(timeout=30_000)

        # Let the first job finish.
        page.goto(f"{base}/job?id={job1}")
        page.get_by_text("Training finished").first.wait_for(timeout=60_000)

        # 5. Restart the portal: both jobs are still there, with their logs and charts.
        server.stop()
        server = PortalServer(server.data_dir, port=server.port).start()
        page.goto(f"{base}/")
        wait_for_app(page)
        page.get_by_text(re.compile(r"Completed \(1\)")).first.wait_for(timeout=15_000)
        page.get_by_text(re.compile(r"Stopped \(1\)")).first.wait_for(timeout=15_000)
        page.goto(f"{base}/job?id={job2}&tab=Logs")
        wait_for_app(page)
        assert "Epoch 2/500" in log_text(page)
        page.goto(f"{base}/job?id={job1}&tab=Metrics")
        wait_for_app(page)
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        assert loss_points() == 12
        page.screenshot(path=str(tmp_path / "job-metrics.png"), full_page=True)
    finally:
        server.stop()
