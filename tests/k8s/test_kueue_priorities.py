"""Priorities on a real Kueue (the test control plane): the submit form offers the admin's WorkloadPriorityClasses
with their sentences and default, kept for a minute rather than read on every rerun; the API refuses a class the
cluster lacks and one the user's group may not use; and a job submitted while the cluster was down goes, once it is
back, to its owner's team queue rather than the default one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import services.portal
from services.backends.base import default_priority, priorities
from services.models import JobStatus, Role, User, ValidationProblem
from services.priority_choice import offered
from tests.conftest import ROOT
from tests.k8s.conftest import Cluster
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture
from tests.k8s.test_kubernetes_backend import until
from tests.k8s.test_kueue import EXAMPLE, KUEUE_MANIFESTS, ME, drain, kueue_portal, team_queues  # noqa: F401

APP = str(ROOT / "portal_app.py")
BATCH = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass", "value": 50,
         "metadata": {"name": "batch", "annotations": {"ml-portal/default-priority": "true"}}}
BATCH_SENTENCE = ("Priority value 50: waiting jobs with a higher value start first, and may take GPUs from running "
                  "jobs with a lower one.")


@pytest.fixture
def batch_class(cluster: Cluster, tmp_path: Path):
    """An admin's own class beside low/normal/urgent: no description, marked as the form's default."""
    path = tmp_path / "batch.yaml"
    path.write_text(json.dumps(BATCH))
    cluster.kubectl("apply", "-f", str(path))
    yield
    cluster.kubectl("delete", "-f", str(path), "--wait=false", check=False)


def test_the_form_offers_the_clusters_classes_by_value_with_their_sentences_and_default(
        cluster, namespace, tmp_path, team_queues, batch_class, monkeypatch):  # noqa: F811
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a",
                          priority_limits={"group:interns": ["low", "batch"]})
    try:
        backend = portal.jobs.backend
        listed = priorities(backend)
        assert [name for name, _ in listed] == ["low", "batch", "normal", "urgent"]
        assert dict(listed)["batch"] == BATCH_SENTENCE
        assert dict(listed)["urgent"].startswith("Starts before every normal and low job that waits")
        assert default_priority(backend) == "batch"
        before = backend.requests
        for _ in range(30):  # thirty reruns of the form within the minute: no read of the cluster
            offered(backend, portal.settings, ME)
        assert backend.requests == before

        monkeypatch.setattr(services.portal, "_portal", portal)  # the pages' portal is this one
        at = AppTest.from_file(APP, default_timeout=30).run()
        at.switch_page("pages/submit.py").run()
        radio = at.radio(key="f_priority")
        assert radio.options == ["low", "batch", "normal", "urgent"] and radio.value == "batch"
        at.text_input(key="f_name").input("from-the-form")
        radio.set_value("urgent")
        at.button(key="submit").click().run()
        assert not at.exception
        (job,) = portal.jobs.list_jobs()
        kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job.id}", "-o", "json"))
        assert kjob["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "urgent"

        with pytest.raises(ValidationProblem) as lacking:
            portal.jobs.submit(ME, {"name": "no-such-class", "priority": "mega", **EXAMPLE})
        assert lacking.value.problems == {"priority": "choose one of low, batch, normal, urgent"}
        ivy = User("ivy", Role.RESEARCHER, groups=("interns",))
        assert [n for n, _ in offered(backend, portal.settings, ivy)[0]] == ["low", "batch"]
        with pytest.raises(ValidationProblem) as limited:
            portal.jobs.submit(ivy, {"name": "intern-urgent", "priority": "urgent", **EXAMPLE})
        assert limited.value.problems == {"priority": "the interns group may use low or batch, not urgent"}
    finally:
        portal.close()
        drain(cluster, namespace)


def test_a_job_submitted_while_the_cluster_was_down_goes_to_its_owners_team_queue(cluster, namespace, tmp_path,
                                                                                   team_queues):  # noqa: F811
    """Before: the submission carried out later had no groups, so bob's job waited in the default queue (team-a's
    quota, behind team-a's jobs) instead of team-b's."""
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    queues = {"kueue_default_queue": "team-a", "kueue_group_queues": {"team-b": "team-b"}}
    dead = tmp_path / "dead-kubeconfig.yaml"
    dead.write_text(re.sub(r"server: https://127\.0\.0\.1:\d+", "server: https://127.0.0.1:1",
                           cluster.kubeconfig.read_text()))
    bob = User(name="bob", groups=("staff", "team-b"))
    down = kueue_portal(cluster, namespace, tmp_path, team_queues, kubeconfig=str(dead), **queues)
    try:
        job_id = down.jobs.submit(bob, {"name": "during-outage", "gpus": 1, **EXAMPLE})
        assert down.jobs.get(bob, job_id).status is JobStatus.SUBMITTING
    finally:
        down.close()
    back = kueue_portal(cluster, namespace, tmp_path, team_queues, **queues)  # the same store, the cluster answers
    try:
        until(back, job_id, lambda j: j.status is JobStatus.RUNNING, timeout=90)
        kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
    finally:
        back.close()
        drain(cluster, namespace)
    assert kjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-b"
