"""Every job's true outcome through faults, on the real control plane: an apiserver restart, a pod deleted
mid-run, a pod evicted for memory. What is asserted is what the researcher reads on the job page."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime

from services.models import JobStatus
from tests.conftest import wait_until
from tests.k8s.test_kubernetes_backend import EXAMPLE, ME, finished, outcome, until


def statuses(portal, job_id: int) -> list[str]:
    """The job's timeline as the job page lists it, one entry per status change."""
    out: list[str] = []
    for _, status, _ in portal.jobs.events(job_id):
        if not out or out[-1] != status:
            out.append(status)
    return out


def test_a_job_accepted_just_after_an_apiserver_restart_gets_its_real_outcome(k8s_portal, cluster, caplog):
    caplog.set_level(logging.INFO, logger="services")
    backend = k8s_portal.jobs.backend
    backend.start()
    assert backend.jobs.synced.wait(10) and backend.pods.synced.wait(10)
    outcome(k8s_portal, runtime="2s")
    with cluster.apiserver_down():
        wait_until(lambda: backend.health() == "The cluster cannot be reached right now.", timeout=30)
        time.sleep(10)  # the watches fail a few times and back off, as they do in any real outage
    # Back: the first job is accepted while the portal's watches still wait out their backoff.
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-after-restart", **EXAMPLE})
    job = finished(k8s_portal, job_id, timeout=150)
    assert (job.status, job.reason) == (JobStatus.SUCCEEDED, None)
    # Learned late, but whole: its start time, its archived log and the metrics read from it.
    assert job.started_at is not None
    assert (job.epoch, job.total_epochs) == (3, 3) and {"loss", "accuracy"} <= set(job.final_metrics)
    assert k8s_portal.jobs.log_tail(job_id)[-1].startswith("Training finished")
    assert "Failed" not in statuses(k8s_portal, job_id)
    # What an admin finds in the portal's log about it: the outage, how long, the watch breaks and relists.
    said = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert "cluster outage 1 began: The cluster cannot be reached right now." in said
    assert re.search(r"cluster outage 1 ended after \d+ s \(watch breaks: jobs [1-9]\d*, pods [1-9]", said), said
    assert "watch of jobs broke (1 so far, 1 lists)" in said and re.search(r"listed jobs again \(2 lists", said)


def test_a_pod_deleted_mid_run_says_so_and_no_queued_appears(k8s_portal, cluster, namespace):
    outcome(k8s_portal, outcome="hang")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-pod-deleted", **EXAMPLE})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    pod = cluster.kubectl("-n", namespace, "get", "pods", "-l", f"job-name=mlp-{job_id}", "-o", "name").strip()
    cluster.kubectl("-n", namespace, "delete", pod, "--wait=false")
    job = finished(k8s_portal, job_id)
    # Not "Failed: Container main for pod ... failed with exit code 143 matching FailJob rule at index 1".
    assert (job.status, job.reason) == (JobStatus.FAILED, "The pod was deleted")
    assert statuses(k8s_portal, job_id) == ["Submitting", "Queued", "Running", "Failed"]


def evict_for_memory(cluster, namespace: str, pod: str) -> None:
    """What a kubelet under memory pressure writes on the pod it evicts."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"phase": "Failed", "reason": "Evicted",
              "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 20Mi. "
                         "Container main was using 30Gi, request is 16Gi, has larger consumption of memory.",
              "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                              "message": "The node was low on resource: memory.", "lastTransitionTime": now},
                             {"type": "Ready", "status": "False", "lastTransitionTime": now}],
              "containerStatuses": [{"name": "main", "image": "x", "ready": False, "restartCount": 0,
                                     "state": {"terminated": {"exitCode": 137, "reason": "Error",
                                                              "startedAt": now, "finishedAt": now}}}]}
    cluster.kubectl("-n", namespace, "patch", pod, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))


def test_a_pod_evicted_for_memory_is_said_in_words_and_the_job_runs_again(k8s_portal, cluster, namespace):
    # "hang": KWOK would otherwise still complete the evicted pod when its runtime is up, which no kubelet does.
    outcome(k8s_portal, outcome="hang")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-evicted", **EXAMPLE})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    pod = cluster.kubectl("-n", namespace, "get", "pods", "-l", f"job-name=mlp-{job_id}", "-o", "name").strip()
    evict_for_memory(cluster, namespace, pod)
    # The Job ignores a disruption and starts a new pod (after its ~10 s backoff); the job page says why.
    job = until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING and j.reason, timeout=60)
    assert job.reason == "Evicted: the node ran out of memory; running again"
    assert statuses(k8s_portal, job_id)[:3] == ["Submitting", "Queued", "Running"]
    assert "Failed" not in statuses(k8s_portal, job_id)
    k8s_portal.jobs.stop(ME, job_id)
    assert finished(k8s_portal, job_id).status is JobStatus.STOPPED


def test_a_stop_asked_during_an_outage_does_not_rewrite_a_job_that_had_finished(k8s_portal, cluster, namespace):
    outcome(k8s_portal, runtime="1s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-late-stop", **EXAMPLE})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    # The job ends in the cluster while the portal is not looking...
    wait_until(lambda: "Complete" in cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o",
                                                     "jsonpath={.status.conditions[*].type}"), timeout=60)
    with cluster.apiserver_down():
        k8s_portal.jobs.stop(ME, job_id)  # ... and Stop is pressed during an outage: kept for later
        assert k8s_portal.jobs.get(ME, job_id).reason.startswith("Stop pending: the cluster cannot be reached")
    job = finished(k8s_portal, job_id, timeout=120)
    assert (job.status, job.reason) == (JobStatus.SUCCEEDED, None)  # what it did, not what was asked too late
    assert k8s_portal.jobs.log_tail(job_id)[-1].startswith("Training finished")
