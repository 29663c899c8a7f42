"""In a real browser: a page left open counts a notification in its navigation as it arrives ("Notifications (1)"),
without a click or a reload, and the Notifications page's "Mark all read" clears the count."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from services.auth import local_user
from services.config import Settings
from tests.conftest import PortalServer, create_token
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


def test_an_open_page_counts_a_failed_job_as_it_happens(browser, tmp_path):  # noqa: F811
    data = tmp_path / "portal-data"
    settings = Settings(data_dir=data)
    token = create_token(data, local_user(settings).name)  # single-user mode: the machine's user
    settings.workspace_dir.mkdir(parents=True, exist_ok=True)
    (settings.workspace_dir / "boom.py").write_text("import sys\nsys.exit(3)\n")
    server = PortalServer(data).start()
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{server.url}/tokens")
        wait_for_app(page)
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_text("Notifications", exact=True)).to_be_visible(timeout=10_000)

        # A job from a notebook fails while the page stays open and untouched.
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "boom", "script": "boom.py", "epochs": 1})
        assert r.status_code == 201, r.text
        expect(nav.get_by_text("Notifications (1)", exact=True)).to_be_visible(timeout=45_000)

        nav.get_by_text("Notifications (1)", exact=True).click()
        wait_for_app(page)
        page.get_by_role("button", name="Mark all read").click()
        wait_for_app(page)
        expect(nav.get_by_text("Notifications", exact=True)).to_be_visible(timeout=10_000)
    finally:
        server.stop()
