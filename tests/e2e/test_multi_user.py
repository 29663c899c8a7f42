"""Done-when of identity and ownership, in a real browser behind an (emulated) auth proxy: in proxy mode the
portal believes the proxy's X-Forwarded-User header, so each browser context below is one signed-in person.
Alice and Bob see their own jobs, cannot touch each other's, and Vera (viewer) browses both. Alice then makes
an API token on the "API tokens" page, and the notebook example uses it to submit, stream and fetch results."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT, PortalServer, sandbox_python, sandbox_skip_reason
from tests.e2e.test_browser import browser, submit_from_form, wait_for_app  # noqa: F401 - fixture

pytestmark = pytest.mark.browser


def person(browser, name: str):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, extra_http_headers={"X-Forwarded-User": name})
    return ctx, ctx.new_page()


@pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
def test_two_researchers_and_a_viewer_behind_the_proxy(browser, open_tmp_path):  # noqa: F811
    # Each local job runs sandboxed under its own UID: the data directory must be one they can pass through.
    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_VIEWERS": "vera", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()
    contexts = []
    try:
        (actx, alice), (bctx, bob), (vctx, vera) = (person(browser, n) for n in ("alice", "bob", "vera"))
        contexts += [actx, bctx, vctx]
        a_job = submit_from_form(alice, server.url, "alice-run", epochs=2, seconds_per_epoch=0)
        b_job = submit_from_form(bob, server.url, "bob-run", epochs=2, seconds_per_epoch=0)
        expect(alice.get_by_text("Signed in as alice (researcher)")).to_be_visible()

        # Each sees only their own jobs on "My experiments".
        for page, mine, other in ((alice, "alice-run", "bob-run"), (bob, "bob-run", "alice-run")):
            page.goto(server.url)
            wait_for_app(page)
            expect(page.get_by_text(mine, exact=True).first).to_be_visible(timeout=30_000)
            assert page.get_by_text(other, exact=True).count() == 0

        # Bob opens Alice's job: read-only, no Stop/Retry/Delete, no download links.
        bob.goto(f"{server.url}/job?id={a_job}")
        wait_for_app(bob)
        expect(bob.get_by_text("alice's job: read-only.")).to_be_visible()
        for label in ("Stop job", "Retry", "Delete"):
            assert bob.get_by_role("button", name=label).count() == 0
        assert bob.get_by_role("link", name="Download full log").count() == 0

        # Vera (viewer) browses both in the history.
        vera.goto(f"{server.url}/history")
        wait_for_app(vera)
        grid = vera.get_by_test_id("stDataFrame")
        expect(grid).to_contain_text("alice-run", timeout=30_000)
        expect(grid).to_contain_text("bob-run")
        # A search is a URL that reopens the same view, and both exports hold exactly that view.
        vera.goto(f"{server.url}/history?q=alice-run")
        wait_for_app(vera)
        expect(vera.get_by_role("textbox", name="Search")).to_have_value("alice-run")
        expect(grid).to_contain_text("alice-run", timeout=30_000)
        expect(grid).not_to_contain_text("bob-run")
        with vera.expect_download() as csv_file:
            vera.get_by_role("link", name="Export CSV").first.click()
        with open(csv_file.value.path(), newline="") as f:
            assert [(r["name"], r["owner"]) for r in csv.DictReader(f)] == [("alice-run", "alice")]
        with vera.expect_download() as parquet_file:
            vera.get_by_role("link", name="Export Parquet").first.click()
        assert pq.read_table(parquet_file.value.path()).column("name").to_pylist() == ["alice-run"]
        vera.goto(f"{server.url}/job?id={b_job}")
        wait_for_app(vera)
        expect(vera.get_by_text("bob's job: read-only.")).to_be_visible()

        # Alice makes a token; the notebook example uses it.
        alice.goto(f"{server.url}/tokens")
        wait_for_app(alice)
        alice.get_by_role("textbox", name="Token name").fill("notebook")
        alice.get_by_role("textbox", name="Token name").press("Tab")
        wait_for_app(alice)
        alice.get_by_role("button", name="Create token").click()
        wait_for_app(alice)
        token = re.search(r"mlp_[\w-]+", alice.get_by_test_id("stCode").first.inner_text()).group(0)
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook_client.py")], cwd=open_tmp_path,
                             capture_output=True, text=True, timeout=180,
                             env=dict(os.environ, PORTAL_URL=server.url, PORTAL_TOKEN=token))
        assert out.returncode == 0, out.stderr
        assert "Training finished" in out.stdout and re.search(r"Final loss: \d", out.stdout), out.stdout
        # The notebook's job is Alice's, on her dashboard.
        alice.goto(server.url)
        wait_for_app(alice)
        expect(alice.get_by_text("gpt-finetune-v3", exact=True).first).to_be_visible(timeout=30_000)
    finally:
        for ctx in contexts:
            ctx.close()
        server.stop()
