"""Kubernetes backend figures, against the test control plane (testenv/start.sh):

1. API requests per minute with 1, 10 and 30 open dashboard sessions, from the apiserver's own
   counters (apiserver_request_total for jobs and pods), against a per-session polling baseline;
2. submission latency: JobService.submit (what the form's button calls) until the Job exists;
3. time from a pod's status change in the cluster to the dashboard in a browser showing it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT, percentile

sys.path.insert(0, str(ROOT))
from services.auth import local_user
from services.config import Settings
from services.portal import build_portal
from tests.conftest import PortalServer

WINDOW = float(os.environ.get("BENCH_WINDOW_SECONDS", "60"))
SESSIONS = (1, 10, 30)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def kubectl(kubeconfig: str, *args: str) -> str:
    bin_dir = subprocess.run([str(ROOT / "testenv" / "build.sh")], check=True, capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
    return subprocess.run([f"{bin_dir}/kubectl", "--kubeconfig", kubeconfig, *args], check=True,
                          capture_output=True, text=True).stdout


def api_requests(kubeconfig: str) -> float:
    """Total requests the apiserver has served for jobs and pods (all verbs, incl. pods/log)."""
    total = 0.0
    for line in kubectl(kubeconfig, "get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_request_total{") and re.search(r'resource="(jobs|pods)"', line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    from playwright.sync_api import sync_playwright

    kubeconfig = subprocess.run([str(ROOT / "testenv" / "start.sh")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", ns)
    data = Path(tempfile.mkdtemp(prefix="portal-k8s-bench-")) / "portal-data"
    env = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": kubeconfig, "PORTAL_NAMESPACE": ns}
    os.environ.update(env)
    server = PortalServer(data).start()
    settings = Settings(data_dir=data, backend="kubernetes", kubeconfig=kubeconfig, namespace=ns)
    submitter = build_portal(settings)
    user = local_user(submitter.settings)
    try:
        # Three jobs that keep running, so the dashboard has live cards to refresh.
        submitter.settings.pod_annotations = {"kwok.test/outcome": "hang"}
        for i in range(3):
            submitter.jobs.submit(user, {"name": f"bench-run-{i}", "script": "train_example.py"})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            ctx = browser.new_context(viewport={"width": 800, "height": 600})
            pages = []
            base_rate = None
            print(f"API requests for jobs+pods per minute (window {WINDOW:.0f} s), read from apiserver_request_total:")
            for n in SESSIONS:
                while len(pages) < n:
                    pg = ctx.new_page()
                    pg.goto(server.url, wait_until="commit", timeout=180_000)
                    pages.append(pg)
                pages[0].wait_for_timeout(30_000)  # steady state: every tab connected and polling
                live = sum(1 for pg in pages if pg.get_by_text(re.compile(r"Running \(3\)")).count())
                before = api_requests(kubeconfig)
                pages[0].wait_for_timeout(WINDOW * 1000)
                rate = (api_requests(kubeconfig) - before - 1) * 60 / WINDOW  # -1: our own /metrics read
                base_rate = base_rate if base_rate is not None else rate
                naive = base_rate + n * 2 * 60 / 2  # LIST jobs + LIST pods per session per 2 s refresh
                print(f"  {n:>2} sessions ({live} showing the running jobs): {rate:7.1f}/min  "
                      f"ratio to 1 session {rate / max(base_rate, 1e-9):4.2f}  "
                      f"(per-session polling would be ~{naive:,.0f}/min, {naive / max(rate, 1e-9):.0f}x)")
            for pg in pages[1:]:
                pg.close()
            page = pages[0]

            # Submission latency: the form's button calls JobService.submit; the Job exists when it returns.
            submitter.settings.pod_annotations = {"kwok.test/runtime": "2s"}
            lat = []
            ids = []
            for i in range(20):
                t = time.perf_counter()
                job_id = submitter.jobs.submit(user, {"name": f"bench-lat-{i}", "script": "train_example.py"})
                lat.append((time.perf_counter() - t) * 1000)
                ids.append(job_id)
                assert json.loads(kubectl(kubeconfig, "-n", ns, "get", "job", f"mlp-{job_id}", "-o", "json"))
            print(f"submission latency (submit -> Job exists), n=20: p50 {statistics.median(lat):.0f} ms, "
                  f"p95 {percentile(lat, 95):.0f} ms")
            page.get_by_text(re.compile(r"Completed \(20\)")).first.wait_for(timeout=120_000)

            # Status propagation: a pod's change in the cluster -> the dashboard's count in the browser.
            delays = []
            from kubernetes import client, config

            batch = client.BatchV1Api(config.new_client_from_config(config_file=kubeconfig))
            for i in range(10):
                done_before = 20 + i
                job_id = submitter.jobs.submit(user, {"name": f"bench-prop-{i}", "script": "train_example.py"})
                label = re.compile(rf"Completed \({done_before + 1}\)")
                t_change = t_seen = None
                deadline = time.monotonic() + 60
                while (t_change is None or t_seen is None) and time.monotonic() < deadline:
                    now = time.monotonic()
                    if t_change is None:
                        st = batch.read_namespaced_job_status(f"mlp-{job_id}", ns).status
                        if st and st.conditions and any(c.type == "Complete" and c.status == "True"
                                                        for c in st.conditions):
                            t_change = now
                    if t_seen is None and page.get_by_text(label).count():
                        t_seen = time.monotonic()
                    page.wait_for_timeout(50)
                if t_change is not None and t_seen is not None:
                    delays.append(max(0.0, t_seen - t_change))
            print(f"pod status change -> dashboard shows it, n={len(delays)}: p50 {statistics.median(delays):.2f} s, "
                  f"p95 {percentile(delays, 95):.2f} s, max {max(delays):.2f} s")
            browser.close()
    finally:
        submitter.close()
        server.stop()
        kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false")


if __name__ == "__main__":
    main()
