"""Retake README's screenshots from a real portal: `make screenshots` (needs Chromium and Playwright).

Starts the portal on a throwaway data folder, submits the example script through the REST API (a running run
and a finished one, as a new user's first minutes look), and photographs the job page's Metrics tab and the
dashboard at 1300 x 900 in headless Chromium. Pages change; pictures that no longer match them mislead.
"""

from __future__ import annotations

import getpass
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import PortalServer, create_token  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1300, "height": 900}


def submit(api: httpx.Client, name: str, epochs: int, seconds: float) -> int:
    r = api.post("/api/v1/jobs", json={"name": name, "script": "train_example.py", "epochs": epochs,
                                       "learning_rate": 0.001, "batch_size": 32,
                                       "extra_args": f"--seconds-per-epoch {seconds}"})
    r.raise_for_status()
    return int(r.json()["id"])


def wait_status(api: httpx.Client, job_id: int, want: set[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if api.get(f"/api/v1/jobs/{job_id}").json()["status"] in want:
            return
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not reach {want} in {timeout:.0f} s")


def settle(page) -> None:
    page.wait_for_timeout(500)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached",
                                                                                         timeout=30_000)
    page.wait_for_timeout(1500)  # charts draw after the script run ends


def main() -> None:
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="portal-screenshots-")) / "portal-data"
    server = PortalServer(data).start()
    try:
        token = create_token(data, getpass.getuser(), "screenshots")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            done = submit(api, "baseline-lr1e-3", 6, 0.2)
            wait_status(api, done, {"Succeeded"})
            running = submit(api, "gpt-finetune-v2", 40, 1.5)
            wait_status(api, running, {"Running"})
            time.sleep(15)  # a few epochs of curves
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{server.url}/job?id={running}&tab=Metrics")
            settle(page)
            page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
            page.goto(f"{server.url}/")
            settle(page)
            page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
            browser.close()
        print("wrote docs/screenshot.png and docs/dashboard.png")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
