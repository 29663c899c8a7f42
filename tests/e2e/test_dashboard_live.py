"""The dashboard keeps itself current in a real browser, even when it was opened with nothing running."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from services.auth import local_user
from services.config import Settings
from tests.conftest import PortalServer, create_token
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


def test_an_idle_dashboard_shows_a_job_submitted_from_a_notebook(browser, tmp_path):  # noqa: F811
    data = tmp_path / "portal-data"
    token = create_token(data, local_user(Settings(data_dir=data)).name)  # single-user mode: the machine's user
    server = PortalServer(data).start()
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{server.url}/")
        wait_for_app(page)
        expect(page.get_by_text("No jobs yet")).to_be_visible(timeout=10_000)

        # As the notebook client does: a job through the REST API, while the page stays open and untouched.
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "from-the-notebook", "script": "train_example.py", "epochs": 3,
                             "extra_args": "--seconds-per-epoch 0.3"})
        assert r.status_code == 201, r.text
        expect(page.get_by_text("from-the-notebook").first).to_be_visible(timeout=15_000)
        # ...and when it ends, it moves to Completed by itself too.
        expect(page.get_by_role("heading", name="Completed (1)")).to_be_visible(timeout=30_000)
    finally:
        server.stop()


def test_the_compare_link_appears_where_the_second_run_was_ticked(browser, tmp_path):  # noqa: F811
    from services.models import JobStatus
    from services.portal import build_portal
    from services.store.seed import seed_jobs

    data = tmp_path / "portal-data"
    portal = build_portal(Settings(data_dir=data, backend="local"))
    try:  # a screenful and more of finished runs
        seed_jobs(portal.jobs.sessions.kw["bind"], 12, owner=local_user(portal.settings).name,
                  status=JobStatus.SUCCEEDED)
    finally:
        portal.close()
    server = PortalServer(data).start()
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{server.url}/")
        wait_for_app(page)
        boxes = page.get_by_test_id("stCheckbox").filter(has_text="Compare")
        expect(boxes.nth(4)).to_be_attached(timeout=10_000)
        for i in (3, 4):  # two cards far below the page's top
            boxes.nth(i).scroll_into_view_if_needed()
            boxes.nth(i).click()
            wait_for_app(page)
        link = page.get_by_role("link", name="Compare 2 runs")
        expect(link.last).to_be_in_viewport(timeout=10_000)
        link.last.click()
        page.wait_for_url("**/compare?ids=*", timeout=15_000)
    finally:
        server.stop()
