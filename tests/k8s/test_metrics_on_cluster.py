"""/metrics of a real portal process on the real control plane: when the kube-apiserver is killed and started
again, what an admin alerts on moves: the watch restarts and the outage count rise, the backend is reported
unreachable during the outage and reachable after it. And the monitoring component, as kustomize renders it."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PortalServer, wait_until
from tests.k8s.conftest import MANIFESTS, render_manifests

TOKEN = "cluster-scraper-token"


def test_watch_restarts_and_outages_rise_when_the_apiserver_restarts(cluster, namespace, tmp_path):
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    env = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(cluster.kubeconfig), "PORTAL_NAMESPACE": namespace,
           "PORTAL_SYNC_INTERVAL_SECONDS": "0.5", "PORTAL_KUBE_REQUEST_TIMEOUT_SECONDS": "5",
           "PORTAL_METRICS_TOKEN_FILE": str(token_file)}
    server = PortalServer(tmp_path / "portal-data", env=env).start()

    def scrape() -> dict[tuple[str, str], float]:
        r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200, r.text
        return {(s.name, s.labels.get("resource", "")): s.value
                for family in text_string_to_metric_families(r.text) for s in family.samples}

    try:
        before = scrape()
        assert before[("portal_build_info", "")] == 1
        assert before[("portal_backend_reachable", "")] == 1
        restarts = {kind: before[("portal_watch_restarts_total", kind)] for kind in ("jobs", "pods")}
        outages = before[("portal_backend_outages_total", "")]
        with cluster.apiserver_down():
            # The scrape still answers (it reads the store and the counters, never the cluster) and says so.
            wait_until(lambda: scrape()[("portal_backend_reachable", "")] == 0, timeout=20, interval=0.5)
            assert scrape()[("portal_backend_outages_total", "")] == outages + 1
        wait_until(lambda: scrape()[("portal_backend_reachable", "")] == 1, timeout=30, interval=0.5)
        after = scrape()
        for kind in ("jobs", "pods"):
            assert after[("portal_watch_restarts_total", kind)] > restarts[kind], kind
        assert after[("portal_backend_outages_total", "")] == outages + 1
        assert after[("portal_sync_lag_seconds", "")] < 10  # the loop ticks again
    finally:
        server.stop()


def test_the_monitoring_component_opens_metrics_through_either_proxy(cluster, tmp_path):
    rendered = render_manifests(cluster, tmp_path / "k", "overlays/kubernetes", "team-a", ("components/monitoring",))
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "team-a"
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    portal, proxy = pod["containers"]
    assert {"name": "PORTAL_METRICS_TOKEN_FILE", "value": "/etc/ml-portal/metrics/token"} in portal["env"]
    assert "--skip-auth-route=^/metrics$" in proxy["args"] and "--skip-auth-route=^/api/v1/" in proxy["args"]
    # On OpenShift the Kubernetes proxy's flag would stop oauth-proxy from starting: the build fails instead.
    with pytest.raises(AssertionError, match="testing value"):
        render_manifests(cluster, tmp_path / "o", "overlays/openshift", "team-a", ("components/monitoring",))
    # ... and the component with its OpenShift patch named renders for OpenShift (a copy, outside the tree).
    copy = tmp_path / "monitoring"
    shutil.copytree(MANIFESTS / "components" / "monitoring", copy)
    kustomization = copy / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("proxy-kubernetes.yaml", "proxy-openshift.yaml"))
    (tmp_path / "os").mkdir()
    (tmp_path / "os" / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "team-a",
        "resources": [os.path.relpath(MANIFESTS / "overlays" / "openshift", tmp_path / "os")],
        "components": ["../monitoring"]}))
    rendered_text = cluster.kubectl("kustomize", str(tmp_path / "os"))
    pod = next(d for d in yaml.safe_load_all(rendered_text) if d and d["kind"] == "Deployment")["spec"]
    assert "--skip-auth-regex=^/metrics$" in pod["template"]["spec"]["containers"][1]["args"]
