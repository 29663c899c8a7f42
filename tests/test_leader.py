"""Leader election's settings and what /healthz says of it, without a cluster (tests/k8s/test_replicas.py runs two
replicas on the control plane)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from services.config import Settings
from services.leader import election_wanted


def test_replicas_of_a_portal_with_local_jobs_are_refused_with_a_sentence(tmp_path):
    with pytest.raises(ValidationError, match="PORTAL_LEADER_ELECTION=on needs the Kubernetes backend"):
        Settings(data_dir=tmp_path, backend="local", leader_election="on")


@pytest.mark.parametrize("backend,url,wanted", [
    ("kubernetes", "postgresql+psycopg://u:p@db/portal", True),  # replicas can share this store
    ("kubernetes", None, False),  # SQLite: one portal only
    ("local", "postgresql+psycopg://u:p@db/portal", False),  # no cluster to hold a Lease in
])
def test_auto_elects_only_where_replicas_can_share_a_store(tmp_path, backend, url, wanted):
    assert election_wanted(Settings(data_dir=tmp_path, backend=backend, database_url=url)) is wanted


def test_a_sole_portal_says_it_leads(server):
    body = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert (body["leader"], body["leader_election"], body["leader_error"]) == (True, "off", None)
    assert body["leader_holder"] and body["sync"]["running"]
