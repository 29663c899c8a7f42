"""A spent budget that says "wait", on the test control plane: without Kueue, a new job of the team is kept in the
portal, Queued with the sentence and nothing created in the cluster, and is submitted, once, when the budget is
raised; with Kueue, a ClusterQueue the spent team shares with another team is not held (the other team's jobs run
on), and the spent team's job waits in the portal instead."""

from __future__ import annotations

from datetime import UTC, datetime

from services import budget_holds, budget_wait, queues
from services.budget_wait import RELEASED
from services.models import JobStatus, Role, User
from services.usage import UsageService
from tests.conftest import wait_until
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture
from tests.k8s.test_kueue import KUEUE_MANIFESTS, drain, kueue_portal, team_queues  # noqa: F401 - fixtures

ADMIN, BOB = User("root", Role.ADMIN), User("bob")
JOB = {"name": "waits", "script": "train_example.py", "epochs": 1, "gpus": 1}


def sentence() -> str:
    return (f"team vision's budget for {datetime.now(UTC):%B} is spent; it starts when an admin or lead raises it "
            "or next month")


def spend(portal, team: str = "vision", queue: str | None = None) -> UsageService:
    portal.jobs.teams.save(ADMIN, team, default_queue=queue)
    portal.jobs.teams.set_member(ADMIN, team, "bob")
    usage = UsageService.of(portal.jobs)
    usage.set_budget(ADMIN, {"scope": "team", "name": team, "unit": "gpu_hours", "monthly_limit": 0,
                             "at_limit": "wait"})
    return usage


def in_cluster(cluster, namespace: str, job_id: int) -> bool:
    return f"job.batch/mlp-{job_id}" in cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name").split()


def test_without_kueue_a_spent_teams_job_waits_in_the_portal_until_the_budget_is_raised(k8s_portal, cluster,
                                                                                         namespace):
    portal = k8s_portal
    portal.settings.pod_annotations = {"kwok.test/runtime": "2s"}
    usage = spend(portal)
    job_id = portal.jobs.submit(BOB, {**JOB, "team": "vision"})
    cancelled = portal.jobs.submit(BOB, {**JOB, "name": "cancelled", "team": "vision"})
    for _ in range(3):
        portal.sync.tick()
    job = portal.jobs.get(BOB, job_id)
    assert job.status is JobStatus.QUEUED and job.reason == f"Waiting: {sentence()}"
    assert not in_cluster(cluster, namespace, job_id), "nothing reaches the cluster while the budget is spent"
    # The Queues page and the job's card say where it is and why (it is in no queue of the cluster).
    view = next(v for v in queues.queue_views(portal.jobs, BOB) if v.summary.name == queues.KEPT_BACK_QUEUE)
    assert [line.id for line in view.waiting] == [job_id, cancelled]
    assert view.waiting[0].status.blocker == sentence()
    line = queues.waiting_line(queues.waiting_status(portal.jobs, job))
    assert line == f"Kept back in the portal · T{sentence()[1:]}"
    portal.jobs.stop(BOB, cancelled)  # a job kept back is cancelled at once: there is nothing to stop in the cluster
    assert portal.jobs.get(BOB, cancelled).status is JobStatus.STOPPED

    usage.set_budget(ADMIN, {"scope": "team", "name": "vision", "unit": "gpu_hours", "monthly_limit": 10,
                             "at_limit": "wait"})
    done = wait_until(lambda: (portal.sync.tick(), (j := portal.jobs.get(BOB, job_id)).is_active is False and j)[1],
                      timeout=90, interval=0.5)
    assert done.status is JobStatus.SUCCEEDED, done.reason
    assert [m for _, _, m in portal.jobs.events(job_id)].count(RELEASED) == 1
    # A replica that lost its lease and comes late to the release finds nothing to submit.
    assert budget_wait.hold_back(portal.jobs, job_id, "bob", "vision", first=False) is True
    assert not in_cluster(cluster, namespace, cancelled), "the cancelled one never went"
    assert all(v.summary.name != queues.KEPT_BACK_QUEUE for v in queues.queue_views(portal.jobs, BOB))
    jobs = cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name").split()
    assert jobs.count(f"job.batch/mlp-{job_id}") == 1


def test_a_cluster_queue_shared_with_another_team_is_not_held_and_the_spent_team_waits_in_the_portal(
        cluster, namespace, tmp_path, team_queues):  # noqa: F811
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a",
                          budget_holds_kueue_queues=True)
    try:
        spend(portal, "vision", "team-b")
        portal.jobs.teams.save(ADMIN, "nlp", default_queue="team-b")  # the same queue, a budget to spare
        portal.jobs.teams.set_member(ADMIN, "nlp", "bob")
        kept = portal.jobs.submit(BOB, {**JOB, "team": "vision"})
        runs = portal.jobs.submit(BOB, {**JOB, "name": "nlp-runs", "team": "nlp"})

        def stop_policy() -> str:
            return cluster.kubectl("get", "clusterqueues.kueue.x-k8s.io", "team-b", "-o",
                                   "jsonpath={.spec.stopPolicy}") or "None"

        wait_until(lambda: (portal.sync.tick(), portal.jobs.get(BOB, runs).status)[1] is JobStatus.RUNNING,
                   timeout=60, interval=0.5)
        budget_holds._last = 0.0  # a reconcile now, not within the 5 s of an earlier test's
        portal.sync.tick()
        job = portal.jobs.get(BOB, kept)
        assert job.status is JobStatus.QUEUED and job.reason == f"Waiting: {sentence()}"
        assert stop_policy() == "None", "holding the shared queue would hold the other team too"
        assert not in_cluster(cluster, namespace, kept)
    finally:
        portal.close()
        drain(cluster, namespace)
