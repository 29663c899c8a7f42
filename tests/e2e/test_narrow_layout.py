"""Issue 15, defect 13: in an 800 px window (a laptop's half screen) nothing a researcher reads or clicks on the
dashboard or the job page's header is cut off: "New job", "Everyone", the cards' names and the header's values
are whole and inside the window, and a 1300 px window still shows them so."""

from __future__ import annotations

import contextlib

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import PortalServer
from tests.e2e.test_browser import browser, submit_from_form, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser

LONG_NAME = "lora-r16-lr3e-4-warmup500-seed42-ablation-v2"
# Whether an element lies inside the window and shows all its text: nothing in it holds more than it shows (an
# ellipsis "Ever…", a value "🟢 Ru…").
FITS = """e => { const r = e.getBoundingClientRect(); const vw = document.documentElement.clientWidth;
  const cut = [e, ...e.querySelectorAll('*')].filter(x => x.scrollWidth > x.clientWidth + 1 && x.innerText.trim()
                                                        && getComputedStyle(x).overflowX !== 'visible');
  return {text: e.innerText.replace(/\\s+/g, ' ').trim(), inside: r.width > 0 && r.left >= 0 && r.right <= vw + 0.5,
          cut: cut.map(x => x.innerText.trim())}; }"""


@pytest.fixture(scope="module")
def two_jobs(browser, tmp_path_factory):  # noqa: F811
    server = PortalServer(tmp_path_factory.mktemp("narrow") / "portal-data").start()
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    done = submit_from_form(page, server.url, LONG_NAME, epochs=1, seconds_per_epoch=0)
    page.get_by_text("Succeeded").first.wait_for(timeout=30_000)
    running = submit_from_form(page, server.url, "narrow-running", epochs=500, seconds_per_epoch=0.5)
    page.get_by_text("Running").first.wait_for(timeout=30_000)
    page.close()
    yield server, running, done
    server.stop()


def assert_whole(locator, what: str) -> None:
    # The page draws in steps: the cards can be there before the toggles above them (a cold first run in CI).
    with contextlib.suppress(PlaywrightTimeout):
        locator.first.wait_for(timeout=10_000)
    assert locator.count() > 0, f"{what} is not on the page"
    for i in range(locator.count()):
        shown = locator.nth(i).evaluate(FITS)
        assert shown["inside"], f"{what} {shown['text']!r} reaches out of the window"
        assert not shown["cut"], f"{what} {shown['text']!r} is cut off: {shown['cut']}"


@pytest.mark.parametrize("width", [800, 1300])
def test_the_dashboard_shows_new_job_everyone_and_the_card_names_whole(browser, two_jobs, width):  # noqa: F811
    server, _running, _done = two_jobs
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_text(LONG_NAME).first.wait_for(timeout=15_000)
    main = page.get_by_test_id("stMain")
    assert_whole(main.get_by_role("link", name="New job"), "the 'New job' link")
    assert_whole(main.get_by_test_id("stCheckbox").filter(has_text="Everyone"), "the 'Everyone' toggle")
    assert_whole(main.get_by_role("link", name=LONG_NAME), "the card's name")
    assert_whole(main.get_by_role("link", name="narrow-running"), "the card's name")
    assert_whole(main.get_by_test_id("stPageLink").filter(has_text="View logs"), "the card's 'View logs'")
    page.close()


@pytest.mark.parametrize("width", [800, 1300])
@pytest.mark.parametrize("which", ["running", "finished"])
def test_the_job_pages_header_values_are_whole(browser, two_jobs, width, which):  # noqa: F811
    server, running, done = two_jobs
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto(f"{server.url}/job?id={running if which == 'running' else done}")
    wait_for_app(page)
    metrics = page.get_by_test_id("stMetric")
    metrics.nth(5).wait_for(timeout=15_000)
    assert metrics.count() == 6
    assert_whole(metrics, "the header's value")
    # The Logs tab's controls above the pane (it opens on the Logs tab).
    main = page.get_by_test_id("stMain")
    for label in ("Auto-scroll", "Pause"):
        assert_whole(main.get_by_test_id("stCheckbox").filter(has_text=label), f"the '{label}' toggle")
    assert_whole(main.get_by_role("link", name="Download full log"), "the 'Download full log' link")
    page.close()
