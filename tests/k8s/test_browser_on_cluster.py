"""Done-when of the Kubernetes backend and its deployment, in a real browser: the portal, holding only its
ServiceAccount's token from the applied manifests (as in its pod), comes up healthy, submits the example from
the form, the dashboard follows it to Succeeded, and the job page has its log and chart."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import PortalServer, wait_until
from tests.e2e.test_browser import browser, submit_from_form, wait_for_app  # noqa: F401 - fixture

pytestmark = pytest.mark.browser


def test_example_job_on_the_cluster_from_the_form(browser, cluster, namespace, deployed, tmp_path):  # noqa: F811
    env = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(deployed), "PORTAL_NAMESPACE": namespace,
           "PORTAL_JOB_SERVICE_ACCOUNT": "ml-portal-job",
           "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/runtime": "6s"})}
    server = PortalServer(tmp_path / "portal-data", env=env).start()
    try:
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        assert health["status"] == "ok" and health["backend"] == "kubernetes"
        wait_until(lambda: httpx.get(f"{server.url}/healthz", timeout=5).json()["sync"]["ticks"] > 2)
        assert httpx.get(f"{server.url}/healthz", timeout=5).json()["backend_error"] is None
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        job_id = submit_from_form(page, server.url, "cluster-example", epochs=3, seconds_per_epoch=0)
        assert f"mlp-{job_id}" in cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name")
        page.goto(server.url)
        wait_for_app(page)
        page.get_by_text(re.compile(r"Completed \(1\)")).first.wait_for(timeout=60_000)
        page.goto(f"{server.url}/job?id={job_id}&tab=Logs")
        wait_for_app(page)
        expect(page.locator(".plog").first).to_contain_text("Training finished", timeout=30_000)
        page.goto(f"{server.url}/job?id={job_id}&tab=Metrics")
        wait_for_app(page)
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        points = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData[0].x.length")
        assert points == 3  # the recorded run's three epochs of loss
    finally:
        server.stop()
