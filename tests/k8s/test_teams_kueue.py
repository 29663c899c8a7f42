"""A team's default Kueue queue on the test control plane with a real Kueue: a job of a team that has one waits in
that LocalQueue; everyone else's still go where PORTAL_KUEUE_DEFAULT_QUEUE / PORTAL_KUEUE_GROUP_QUEUES say."""

from __future__ import annotations

import json

from services.models import Role, User
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture
from tests.k8s.test_kubernetes_backend import until
from tests.k8s.test_kueue import KUEUE_MANIFESTS, drain, kueue_portal, team_queues  # noqa: F401 - fixtures

EXAMPLE = {"script": "train_example.py", "epochs": 3, "gpus": 1}


def test_a_teams_jobs_wait_in_its_default_queue(cluster, namespace, tmp_path, team_queues):  # noqa: F811
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a")
    teams = portal.jobs.teams
    admin = User("root", Role.ADMIN)
    teams.save(admin, "vision", default_queue="team-b")
    teams.set_member(admin, "vision", "bob")
    try:
        bobs = portal.jobs.submit(User("bob"), {"name": "vision-run", **EXAMPLE})
        carols = portal.jobs.submit(User("carol"), {"name": "no-team-run", **EXAMPLE})
        for job_id in (bobs, carols):
            until(portal, job_id, lambda j: j.status.value in ("Queued", "Running"), timeout=60)

        def queue_of(job_id: int) -> str:
            kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
            return kjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]

        assert (queue_of(bobs), queue_of(carols)) == ("team-b", "team-a")
    finally:
        portal.close()
        drain(cluster, namespace)
