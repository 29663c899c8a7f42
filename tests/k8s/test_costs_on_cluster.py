"""What a cluster job costs, on the test control plane (KWOK pods): each pod of a multi-node job is costed from when
its node took it to its end, on the node it ran, so pods that start at different times cost what they ran, not the
Job's whole span on every node; and with Kueue, a spent team budget that says "wait" holds the team's ClusterQueue
until it is raised."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from services.backends.k8s_status import parse_time
from services.models import JobStatus, Role, User
from tests.conftest import wait_until
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture
from tests.k8s.test_kueue import team_queues  # noqa: F401 - the fixture

ME = User(name="researcher", role=Role.ADMIN)


def test_a_multi_node_job_whose_pods_start_apart_costs_what_each_pod_ran(k8s_portal, cluster, namespace, tmp_path):
    # gpu-node-1's 8 GPUs taken by a pod of someone else's, so the job's second pod waits for them.
    blocker = tmp_path / "blocker.json"
    blocker.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other-team", "namespace": namespace},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "gpu-node-1"},
                 "containers": [{"name": "main", "image": "busybox",
                                 "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}))
    cluster.kubectl("apply", "-f", str(blocker))
    wait_until(lambda: "Running" in cluster.kubectl("-n", namespace, "get", "pod", "other-team", "-o",
                                                    "jsonpath={.status.phase}"), timeout=30)
    k8s_portal.settings.pod_annotations = {"kwok.test/runtime": "6s"}
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-costed", "script": "train_example.py", "epochs": 3, "gpus": 8,
                                         "nodes": 2})

    def job():
        k8s_portal.sync.tick()
        return k8s_portal.jobs.get(ME, job_id)

    wait_until(lambda: job().status is JobStatus.RUNNING and job().reason == "1/2 pods running", timeout=60,
               interval=0.3)
    running = wait_until(lambda: (j := job()).gpu_hours and j, timeout=30, interval=0.3)
    assert running.gpu_hours * 3600 < 8 * 8  # one pod of 8 GPUs so far (accrued every 5 s)
    time.sleep(3)  # the first pod runs on alone a while
    cluster.kubectl("-n", namespace, "delete", "pod", "other-team", "--wait=false")
    done = wait_until(lambda: (j := job()).is_active is False and j, timeout=90, interval=0.3)
    assert done.status is JobStatus.SUCCEEDED, done.reason

    pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"job-name=mlp-{job_id}", "-o",
                                      "json"))["items"]
    spans = sorted((parse_time(p["status"]["startTime"]),
                    parse_time(p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]),
                    p["spec"]["nodeName"]) for p in pods)
    assert len(spans) == 2 and {node for *_, node in spans} == {"gpu-node-0", "gpu-node-1"}
    assert (spans[1][0] - spans[0][0]).total_seconds() >= 2  # the second started once the GPUs were free
    ran = sum((end - start).total_seconds() for start, end, _ in spans)
    assert abs(done.gpu_hours * 3600 - 8 * ran) < 2  # 8 GPUs × what each pod ran
    whole_span = (done.finished_at - done.started_at).total_seconds()
    assert done.gpu_hours * 3600 < 16 * whole_span - 8 * 2  # not the Job's whole span on both nodes
    rate = k8s_portal.settings.gpu_price_per_hour * 8 + k8s_portal.settings.node_price_per_hour
    assert abs(done.cost_total - rate * ran / 3600) < 0.05


def test_a_spent_budget_that_says_wait_holds_the_teams_kueue_queue_until_it_is_raised(
        cluster, namespace, tmp_path, team_queues):  # noqa: F811
    from services import budget_holds
    from services.usage import UsageService
    from tests.k8s.test_kueue import KUEUE_MANIFESTS, drain, kueue_portal

    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a",
                          budget_holds_kueue_queues=True)
    admin, bob = User("root", Role.ADMIN), User("bob")
    portal.jobs.teams.save(admin, "vision", default_queue="team-b")
    portal.jobs.teams.set_member(admin, "vision", "bob")
    usage = UsageService.of(portal.jobs)
    usage.set_budget(admin, {"scope": "team", "name": "vision", "unit": "gpu_hours", "monthly_limit": 0,
                             "at_limit": "wait"})

    def stop_policy() -> str:
        return cluster.kubectl("get", "clusterqueues.kueue.x-k8s.io", "team-b", "-o",
                               "jsonpath={.spec.stopPolicy}") or "None"

    try:
        # Spent: the next ticks hold the team's queue (a budget spent by running jobs is held the same way).
        wait_until(lambda: (portal.sync.tick(), stop_policy())[1] == "Hold", timeout=30, interval=0.5)
        job_id = portal.jobs.submit(bob, {"name": "held", "script": "train_example.py", "epochs": 3, "gpus": 1})
        month = datetime.now(UTC)
        sentence = (f"team vision's budget for {month:%B} is spent; it starts when an admin or lead raises it or "
                    "next month")
        def seen():
            portal.sync.tick()
            return portal.jobs.get(bob, job_id)

        try:
            held = wait_until(lambda: (j := seen()).reason == sentence and j, timeout=30, interval=0.5)
        except AssertionError:
            raise AssertionError(f"{seen()} {stop_policy()}") from None
        assert held.status is JobStatus.QUEUED and stop_policy() == "Hold"
        time.sleep(3)
        portal.sync.tick()
        assert portal.jobs.get(bob, job_id).status is JobStatus.QUEUED  # Kueue admits nothing from a held queue
        # Another team given the same queue: no longer vision's own, but held while vision's job waits in it.
        portal.jobs.teams.save(admin, "nlp", default_queue="team-b")
        budget_holds._last = 0.0
        portal.sync.tick()
        assert stop_policy() == "Hold" and portal.jobs.get(bob, job_id).status is JobStatus.QUEUED

        usage.set_budget(admin, {"scope": "team", "name": "vision", "unit": "gpu_hours", "monthly_limit": 10,
                                 "at_limit": "wait"})
        wait_until(lambda: (portal.sync.tick(), portal.jobs.get(bob, job_id).status)[1] is JobStatus.RUNNING,
                   timeout=60, interval=0.5)
        assert stop_policy() == "None"
    finally:
        portal.close()
        release = {"spec": {"stopPolicy": "None"}, "metadata": {"annotations": {"ml-portal/budget-hold": None}}}
        cluster.kubectl("patch", "clusterqueues.kueue.x-k8s.io", "team-b", "--type=merge", "-p", json.dumps(release))
        drain(cluster, namespace)
