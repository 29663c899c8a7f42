"""TensorBoard in a real browser: a job that logged only to TensorBoard has "Open TensorBoard" on its page; the
link opens TensorBoard through the portal's own address, behind the portal's CSP (relaxed by 'unsafe-eval' there
only), and it draws the job's runs and its scalars' cards without a blocked script."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import PortalServer, create_token, wait_until
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)
from tests.tb_writer import tb_script

pytestmark = pytest.mark.browser


@pytest.mark.timeout(180)
def test_open_tensorboard_from_the_job_page_draws_its_runs_through_the_portal(browser, tmp_path):  # noqa: F811
    data = tmp_path / "portal-data"
    (data / "workspace").mkdir(parents=True)
    (data / "workspace" / "tb_only.py").write_text(tb_script(steps=5))
    server = PortalServer(data).start()
    try:
        token = create_token(data, "me")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "tb-only", "script": "tb_only.py", "epochs": 1})
        job_id = r.json()["id"]
        wait_until(lambda: httpx.get(f"{server.url}/api/v1/jobs/{job_id}",
                                     headers={"Authorization": f"Bearer {token}"}).json()["finished"], timeout=60)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        blocked: list[str] = []
        context.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page = context.new_page()
        page.goto(f"{server.url}/job?id={job_id}")
        wait_for_app(page)
        link = page.get_by_role("link", name="Open TensorBoard")
        expect(link).to_be_visible(timeout=20_000)
        assert link.get_attribute("href") == f"/tensorboard/{job_id}/"
        with context.expect_page() as opened:
            link.click()
        tb = opened.value
        tb.wait_for_load_state()
        assert tb.url == f"{server.url}/tensorboard/{job_id}/"
        expect(tb.get_by_text(f"{job_id}-tb-only/runs/train").first).to_be_visible(timeout=60_000)
        expect(tb.get_by_text("accuracy", exact=True).first).to_be_visible(timeout=30_000)
        expect(tb.get_by_text("loss", exact=True).first).to_be_visible(timeout=30_000)
        assert blocked == [], blocked
        context.close()
    finally:
        server.stop()
