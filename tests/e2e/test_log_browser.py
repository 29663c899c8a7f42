"""The Logs tab in a real Chromium (issue 15): search a finished job's log, follow a hit's line link, land on that
line highlighted with its context; the pane's own styling survives Streamlit's HTML sanitizer."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import create_token, wait_until
from tests.e2e.test_browser import browser, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


def test_search_then_open_a_hits_line_link(browser, server):  # noqa: F811
    auth = {"Authorization": f"Bearer {create_token(server.data_dir, 'local')}"}
    r = httpx.post(f"{server.url}/api/v1/jobs", headers=auth,
                   json={"name": "log-links", "script": "train_example.py", "epochs": 30,
                         "extra_args": "--seconds-per-epoch 0"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    wait_until(lambda: httpx.get(f"{server.url}/api/v1/jobs/{job_id}/status", headers=auth).json()["finished"],
               timeout=60, interval=0.3)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server.url}/job?id={job_id}&tab=Logs")
    wait_for_app(page)
    pane = page.locator(".plog").first
    expect(pane).to_contain_text("Training finished", timeout=30_000)

    search = page.get_by_role("textbox", name="Search the log")
    search.fill("epoch 17/")
    search.press("Enter")
    wait_for_app(page)
    expect(page.get_by_text(re.compile(r"^1 matching line ·"))).to_be_visible(timeout=15_000)
    hit = page.locator("[class*='st-key-log_hits'] .plog div").first
    expect(hit).to_contain_text("Epoch 17/30")
    expect(hit.locator("mark")).to_have_text("Epoch 17/")
    line = int(hit.locator("a.n").inner_text())

    hit.locator("a.n").click()
    page.wait_for_url(re.compile(rf".*/job\?id={job_id}&tab=Logs&line={line}$"), timeout=15_000)
    wait_for_app(page)
    marked = page.locator(".plog div.hl")
    expect(marked).to_have_count(1, timeout=15_000)
    expect(marked).to_contain_text("Epoch 17/30")
    assert marked.locator("a.n").inner_text() == str(line)
    expect(page.get_by_text(f"Line {line:,} of the log, with 20 lines either side.")).to_be_visible()
    # Context on both sides, and our colours applied (the <style> reached the page).
    numbers = [int(n) for n in page.locator(".plog a.n").all_inner_texts()]
    assert numbers[0] == max(1, line - 20) and line in numbers and numbers[-1] > line
    background = marked.evaluate("el => getComputedStyle(el).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background

    page.get_by_role("button", name="Back to the end of the log").click()  # a finished job: no live tail
    wait_for_app(page)
    expect(page.locator(".plog div.hl")).to_have_count(0)
    assert "line=" not in page.url
    expect(page.locator(".plog").first).to_contain_text("Training finished")
