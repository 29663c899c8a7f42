"""A follower replica's pages say when the cluster is down, before any request of its own has failed: it starts no
watches (only the leader does), but its campaign for the Lease reads the cluster every few seconds."""

from __future__ import annotations

from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from tests.conftest import wait_until

APP = str(Path(__file__).resolve().parent.parent / "portal_app.py")


def test_a_follower_shows_the_cluster_banner_from_its_lease_campaign(tmp_path, monkeypatch):
    from services.portal import get_portal, reset_portal

    down = {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}  # a closed port: a cluster that is down
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": down}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    for name, value in {"PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_BACKEND": "kubernetes",
                        "PORTAL_KUBECONFIG": str(kubeconfig), "PORTAL_LEADER_ELECTION": "on",
                        "PORTAL_LEADER_LEASE_SECONDS": "3", "POD_NAME": "portal-1"}.items():
        monkeypatch.setenv(name, value)
    reset_portal()
    try:
        portal = get_portal()
        portal.sync.start()
        wait_until(lambda: portal.sync.leadership.error is not None, timeout=30)
        assert not portal.sync.leadership.held() and portal.jobs.backend.health() is None  # no watch ever ran
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception
        banners = [w.value for w in at.warning if "The cluster is not available" in w.value]
        assert len(banners) == 1 and "cannot be reached" in banners[0] and "history is still here" in banners[0]
        assert at.title[0].value == "My experiments"  # the history stays browsable
    finally:
        reset_portal()
