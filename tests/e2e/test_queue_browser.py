"""A waiting job's dashboard card in a real browser: its place, why it waits and roughly when it starts; then it
starts by itself once the GPU it waits for is free."""

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


def test_a_waiting_jobs_card_says_where_it_stands_and_when_it_starts(browser, tmp_path):  # noqa: F811
    data = tmp_path / "portal-data"
    token = create_token(data, local_user(Settings(data_dir=data)).name)  # single-user mode: the machine's user
    server = PortalServer(data, env={"PORTAL_LOCAL_GPUS": "1"}).start()
    h = {"Authorization": f"Bearer {token}"}

    def submit(name: str, **values) -> int:
        r = httpx.post(f"{server.url}/api/v1/jobs", headers=h, json={"name": name, "script": "train_example.py",
                                                                      "gpus": 1, **values})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    try:
        first = submit("holds-the-gpu", epochs=40, extra_args="--seconds-per-epoch 0.5")
        waiting = submit("waits-its-turn", epochs=1, extra_args="--seconds-per-epoch 0")
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{server.url}/")
        wait_for_app(page)
        card = page.get_by_test_id("stVerticalBlock").filter(has_text="waits-its-turn").last
        expect(card.get_by_text(f"1st in the queue of this machine · This machine's only GPU is in use by #{first}")
               ).to_be_visible(timeout=15_000)
        # Once the running job reports its epochs, the estimate is a range of clock times, not "unknown".
        expect(card.get_by_text(re.compile(r"Estimated start: (between \d\d:\d\d and \d\d:\d\d|about \d\d:\d\d) UTC"))
               ).to_be_visible(timeout=20_000)
        assert httpx.post(f"{server.url}/api/v1/jobs/{first}/stop", headers=h, json={}).status_code == 202
        # It starts by itself, and the card stops saying it waits.
        expect(page.get_by_text("waits-its-turn")).to_be_visible()
        expect(page.get_by_text("in the queue of this machine")).to_have_count(0, timeout=30_000)
        r = httpx.get(f"{server.url}/api/v1/jobs/{waiting}", headers=h).json()
        assert r["started_at"] is not None and r["queue"] is None
    finally:
        server.stop()
