"""Issue 15's papercuts that only a real browser shows: the uploader refusing a wrong file as it is chosen, Save
checkpoint turning on by itself once the job runs, its label whole, and `make run`'s portal watching no files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT, PortalServer, free_port, wait_until
from tests.e2e.test_browser import browser, submit_from_form, wait_for_app  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.browser


@pytest.fixture
def portal_server(tmp_path):
    # A slow sync loop keeps a new job "Queued" for a few seconds: long enough to see the page before it runs.
    srv = PortalServer(tmp_path / "portal-data", env={"PORTAL_SYNC_INTERVAL_SECONDS": "4"}).start()
    yield srv
    srv.stop()


def choose_upload(page, base: str, path: Path) -> None:
    page.goto(f"{base}/submit")
    wait_for_app(page)
    page.get_by_text("Upload new script").click()
    wait_for_app(page)
    # The widget states the portal's limit and the kind of file, not Streamlit's "200MB per file".
    expect(page.get_by_test_id("stFileUploader")).to_contain_text(re.compile(r"5MB per file\W+PY"), timeout=5_000)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
    page.wait_for_timeout(500)
    wait_for_app(page)


@pytest.mark.parametrize(("name", "size", "refusal"), [
    ("notes.txt", 10, r"not allowed|not a Python file"),
    ("huge.py", 6_000_000, r"5(\.0)? ?MB or smaller|the limit is 5 MB"),
])
def test_the_uploader_refuses_a_wrong_file_as_it_is_chosen(browser, portal_server, tmp_path, name, size, refusal):  # noqa: F811
    path = tmp_path / name
    path.write_bytes(b"#" * size)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    choose_upload(page, portal_server.url, path)
    # Said by the field at once, before any Submit.
    expect(page.get_by_test_id("stMain")).to_contain_text(re.compile(refusal), timeout=10_000)
    assert not (portal_server.data_dir / "workspace" / "uploads").exists()


def test_save_checkpoint_turns_on_by_itself_once_the_job_runs_and_its_label_fits(browser, portal_server):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    submit_from_form(page, portal_server.url, "ckpt", epochs=200, seconds_per_epoch=0.5)
    button = page.get_by_role("button", name="Save checkpoint")
    expect(button).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("stMetricValue").first).to_contain_text(re.compile("Queued|Submitting|Running"))
    # No reload: the status strip's poll sees "Running" and the page draws the button enabled.
    expect(button).to_be_enabled(timeout=30_000)
    # Cut off: some element of the button holds more than it shows ("S…"); wrapped: taller than its neighbour.
    clipped = button.evaluate("b => [b, ...b.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1)"
                              ".length")
    height = button.evaluate("b => b.getBoundingClientRect().height")
    clone_height = page.get_by_role("button", name="Clone").evaluate("b => b.getBoundingClientRect().height")
    assert clipped == 0, "the label 'Save checkpoint' is cut off"
    assert height <= clone_height + 1, "the label 'Save checkpoint' wraps onto a second line"
    page.get_by_role("button", name="Stop job").click()
    page.get_by_text("Stopped by user").first.wait_for(timeout=30_000)


def inotify_watches(pid: int) -> int:
    watches = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:inotify":
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                watches += sum(line.startswith("inotify wd:") for line in info.splitlines())
        except OSError:
            continue
    return watches


def test_the_portal_as_make_run_starts_it_watches_no_files(browser, tmp_path):  # noqa: F811
    """`make run`'s own command line (no --server.fileWatcherType): what .streamlit/config.toml says decides.
    Watching the project folder meant a watch on every folder of .venv and of the jobs' data."""
    port = free_port()
    env = dict(os.environ, PORTAL_DATA_DIR=str(tmp_path / "portal-data"), PORTAL_BACKEND="local")
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "portal_app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false",
                             "--client.toolbarMode", "viewer"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, interval=0.3)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")  # a session: where Streamlit starts its watcher
        wait_for_app(page)
        page.wait_for_timeout(1000)
        assert inotify_watches(proc.pid) == 0
        page.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    assert len((tmp_path / "server.log").read_bytes()) < 4096  # a few lines, not a megabyte of warnings
