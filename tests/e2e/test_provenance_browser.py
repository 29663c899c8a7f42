"""Provenance in a real browser: Clone on a job's page, submit the prefilled form, and the new job's page says
"Cloned from #N", a link that opens job N; its Script tab shows the script the job ran."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import PortalServer
from tests.e2e.test_browser import browser, submit_from_form, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


@pytest.mark.timeout(180)
def test_clone_links_back_to_its_parent_and_shows_its_script(browser, tmp_path):  # noqa: F811
    server = PortalServer(tmp_path / "portal-data").start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        first = submit_from_form(page, server.url, "origin", epochs=1, seconds_per_epoch=0)
        expect(page.get_by_test_id("stMetricValue").first).to_contain_text("Succeeded", timeout=30_000)
        page.get_by_role("button", name="Clone").click()
        page.wait_for_url(re.compile(r".*/submit\?clone=\d+"), timeout=30_000)
        wait_for_app(page)
        page.get_by_role("button", name="Submit job").click()
        page.wait_for_url(re.compile(rf".*/job\?id=(?!{first}\b)\d+"), timeout=30_000)
        wait_for_app(page)
        clone = int(re.search(r"id=(\d+)", page.url).group(1))

        link = page.get_by_role("link", name=f"Cloned from #{first} origin")
        expect(link).to_be_visible(timeout=10_000)
        page.get_by_role("tab", name="Script").click()
        wait_for_app(page)
        expect(page.get_by_test_id("stCode").first).to_contain_text("Epoch", timeout=10_000)
        expect(page.get_by_test_id("stMain")).to_contain_text("Identical", timeout=10_000)

        link.click()
        page.wait_for_url(re.compile(rf".*/job\?id={first}\b"), timeout=30_000)
        wait_for_app(page)
        expect(page.get_by_role("heading", name="origin")).to_be_visible(timeout=10_000)
        assert clone != first
    finally:
        server.stop()
