"""A sweep's page in a real headless Chromium behind the portal's real Content-Security-Policy: launched from the
Sweep form, it follows the trials by itself as they end, draws its charts (the parallel coordinates as SVG lines,
not WebGL), and submits the best trial as a job in one click."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from services.auth import local_user
from services.config import Settings
from tests.conftest import PortalServer, create_token
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


def test_a_sweep_from_the_form_is_followed_live_and_its_best_submitted(browser, tmp_path):  # noqa: F811
    data = tmp_path / "portal-data"
    token = create_token(data, local_user(Settings(data_dir=data)).name)  # single-user mode: the machine's user
    server = PortalServer(data).start()
    violations: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{server.url}/submit")
        wait_for_app(page)
        page.get_by_text("Sweep", exact=True).click()
        wait_for_app(page)
        page.get_by_role("textbox", name="Experiment name", exact=True).fill("browser-sweep")
        args = page.get_by_role("textbox", name="Additional args", exact=True)
        args.fill("--seconds-per-epoch 0.3")
        args.press("Tab")
        wait_for_app(page)
        # Learning rate: a list of three; epochs fixed at 3; two at a time; no early stopping (all six finish).
        page.get_by_role("combobox", name="How Learning rate varies").click()
        page.get_by_role("option", name="List of values").click()
        wait_for_app(page)
        values = page.get_by_role("textbox", name="Learning rate: values")
        values.fill("0.01, 0.1, 0.5")
        values.press("Tab")
        epochs = page.get_by_role("textbox", name="Epochs: value")
        epochs.fill("3")
        epochs.press("Tab")
        wait_for_app(page)
        page.get_by_text("Grid (every combination)").click()
        page.get_by_text("None", exact=True).click()
        wait_for_app(page)
        expect(page.get_by_text(re.compile(r"up to 3 trials × \d+ h on CPU ≈"))).to_be_visible()
        page.get_by_role("button", name="Submit sweep").click()
        # The sweep's page opens and follows its trials without a reload, until all three are done.
        expect(page).to_have_url(re.compile(r"/sweep\?id=\d+"), timeout=20_000)
        expect(page.get_by_role("heading", name="Sweep browser-sweep")).to_be_visible()
        done = page.get_by_test_id("stMetric").filter(has_text="Done").get_by_test_id("stMetricValue")
        expect(done).to_have_text("3", timeout=90_000)
        expect(page.get_by_text(re.compile(r"Best trial so far: #\d"))).to_be_visible(timeout=15_000)
        expect(page.locator(".js-plotly-plot")).to_have_count(3, timeout=20_000)  # by trial, curves, parallel
        assert page.locator(".js-plotly-plot").nth(2).locator("svg .scatterlayer path.js-line").count() >= 1
        assert "WebGL" not in page.get_by_test_id("stMain").inner_text()
        sweep_id = int(re.search(r"id=(\d+)", page.url).group(1))
        h = {"Authorization": f"Bearer {token}"}
        best = httpx.get(f"{server.url}/api/v1/sweeps/{sweep_id}", headers=h).json()["best"]
        page.get_by_role("button", name="Submit the best as a job").click()
        expect(page).to_have_url(re.compile(r"/job\?id=\d+"), timeout=20_000)
        job_id = int(re.search(r"id=(\d+)", page.url).group(1))
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=h).json()
        assert job["name"] == "browser-sweep-best"
        assert job["request"]["learning_rate"] == best["params"]["learning_rate"]
        assert violations == []
    finally:
        server.stop()
