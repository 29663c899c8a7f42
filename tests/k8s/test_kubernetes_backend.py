"""The Kubernetes backend against the real control plane (KWOK-simulated GPU nodes and pods).

Each test says what a researcher would see on the dashboard or the job page.
"""

from __future__ import annotations

import json

from services.backends.k8s_manifests import owner_hash
from services.models import JobStatus, Role, User
from services.portal import build_portal
from tests.conftest import wait_until
from tests.k8s.conftest import k8s_settings

ME = User(name="researcher", role=Role.ADMIN)
EXAMPLE = {"script": "train_example.py", "epochs": 3}


def until(portal, job_id, predicate, timeout=60):
    user = ME

    def check():
        portal.sync.tick()
        job = portal.jobs.get(user, job_id)
        return job if predicate(job) else None

    return wait_until(check, timeout=timeout, interval=0.3)


def finished(portal, job_id, timeout=60):
    return until(portal, job_id, lambda j: not j.is_active, timeout)


def outcome(portal, **annotations):
    portal.settings.pod_annotations = {f"kwok.test/{k.replace('_', '-')}": v for k, v in annotations.items()}


def test_single_node_job_runs_to_succeeded_with_logs_and_metrics(k8s_portal, cluster, namespace):
    user = ME
    outcome(k8s_portal, runtime="2s")
    job_id = k8s_portal.jobs.submit(user, {"name": "k8s-single", "gpus": 1, **EXAMPLE})
    job = until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    assert job.started_at is not None
    job = finished(k8s_portal, job_id)
    # The dashboard shows it succeeded, with the example's epochs, loss and accuracy from the pod's log.
    assert job.status is JobStatus.SUCCEEDED, job.reason
    assert (job.epoch, job.total_epochs) == (3, 3)
    assert {"loss", "accuracy"} <= set(job.final_metrics)
    assert any("Training finished" in line for line in k8s_portal.jobs.log_tail(job_id))

    # What ran in the cluster is the exact spec the Config tab shows.
    kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
    assert kjob["spec"] == {**kjob["spec"], **{k: v for k, v in job.spec["spec"].items() if k != "template"}}
    labels = kjob["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "ml-job-portal"
    assert labels["ml-portal/job-id"] == str(job_id) and labels["ml-portal/owner-hash"] == owner_hash(user.name)
    assert kjob["metadata"]["annotations"]["ml-portal/experiment"] == "k8s-single"
    pod = kjob["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctr = pod["containers"][0]
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert ctr["args"][ctr["args"].index("--epochs") + 1] == "3"
    assert kjob["spec"]["activeDeadlineSeconds"] == 8 * 3600
    rules = kjob["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore" and rules[1]["action"] == "FailJob"
    # The script travels in a ConfigMap that the Job owns (garbage-collected with it).
    cm = json.loads(cluster.kubectl("-n", namespace, "get", "configmap", f"mlp-{job_id}-script", "-o", "json"))
    assert "train_example.py" in cm["data"] and "portal_metrics.py" in cm["data"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == kjob["metadata"]["uid"]


def test_two_nodes_with_four_gpus_each(k8s_portal, cluster, namespace):
    user = ME
    outcome(k8s_portal, runtime="4s")
    job_id = k8s_portal.jobs.submit(user, {"name": "k8s-multi", "gpus": 4, "nodes": 2, **EXAMPLE})
    job = until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING and j.reason == "2/2 pods running")
    kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
    spec = kjob["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["podReplacementPolicy"] == "Failed"
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == f"mlp-{job_id}-0.mlp-{job_id}"
    assert env["WORLD_SIZE"]["value"] == "2" and env["NPROC_PER_NODE"]["value"] == "4"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    svc = json.loads(cluster.kubectl("-n", namespace, "get", "service", f"mlp-{job_id}", "-o", "json"))
    assert svc["spec"]["clusterIP"] == "None"
    job = finished(k8s_portal, job_id)
    assert job.status is JobStatus.SUCCEEDED, job.reason
    # One log per rank.
    assert k8s_portal.jobs.backend.log_ranks(job_id) == [0, 1]


def test_oom_killed_pod_is_shown_as_killed_out_of_memory(k8s_portal):
    outcome(k8s_portal, outcome="fail", exit_code="137", reason="OOMKilled", runtime="1s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-oom", **EXAMPLE})
    job = finished(k8s_portal, job_id)
    assert (job.status, job.reason) == (JobStatus.FAILED, "Killed: out of memory")
    assert job.exit_code == 137


def test_script_error_exit_code_is_the_reason(k8s_portal):
    outcome(k8s_portal, outcome="fail", exit_code="2", runtime="1s")
    job = finished(k8s_portal, k8s_portal.jobs.submit(ME, {"name": "k8s-exit2", **EXAMPLE}))
    assert (job.status, job.reason) == (JobStatus.FAILED, "Exited with code 2")


def test_more_gpus_than_any_node_waits_with_the_reason(k8s_portal):
    outcome(k8s_portal, runtime="1s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-greedy", "gpus": 12, **EXAMPLE})
    job = until(k8s_portal, job_id, lambda j: j.reason == "Waiting for 12 GPUs", timeout=60)
    assert job.status is JobStatus.QUEUED
    k8s_portal.jobs.stop(ME, job_id)
    assert finished(k8s_portal, job_id).status is JobStatus.STOPPED


def test_logs_survive_the_pod(k8s_portal, cluster, namespace):
    outcome(k8s_portal, runtime="1s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-logs", **EXAMPLE})
    finished(k8s_portal, job_id)
    cluster.kubectl("-n", namespace, "delete", "job", f"mlp-{job_id}", "--cascade=foreground", "--wait=true")
    assert cluster.kubectl("-n", namespace, "get", "pods", "-o", "name").strip() == ""
    tail = k8s_portal.jobs.log_tail(job_id)
    assert tail[0].startswith("Training on") and tail[-1].startswith("Training finished")


def test_stop_deletes_the_job_and_keeps_the_history(k8s_portal, cluster, namespace):
    user = ME
    outcome(k8s_portal, outcome="hang")
    job_id = k8s_portal.jobs.submit(user, {"name": "k8s-stop", **EXAMPLE})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    k8s_portal.jobs.stop(user, job_id)
    job = finished(k8s_portal, job_id)
    assert (job.status, job.reason) == (JobStatus.STOPPED, "Stopped by user")
    wait_until(lambda: f"mlp-{job_id}" not in cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name"))
    assert k8s_portal.jobs.log_tail(job_id)  # history and log stay


def test_portal_restart_while_a_job_runs(k8s_portal, cluster, namespace, tmp_path):
    user = ME
    outcome(k8s_portal, outcome="hang")
    job_id = k8s_portal.jobs.submit(user, {"name": "k8s-restart", **EXAMPLE})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)
    k8s_portal.close()
    again = build_portal(k8s_portal.settings)
    try:
        job = until(again, job_id, lambda j: True)
        assert job.status is JobStatus.RUNNING
        # Deleted behind the portal's back while it watched: marked lost, never "Running" forever.
        cluster.kubectl("-n", namespace, "delete", "job", f"mlp-{job_id}", "--wait=false")
        job = finished(again, job_id)
        assert job.status is JobStatus.FAILED and job.reason.startswith("Lost:")
    finally:
        again.close()


def test_watch_relists_after_410_gone(k8s_portal, caplog):
    """The test apiserver compacts etcd every 20 s and has no watch cache, so old versions answer 410."""
    import logging

    from kubernetes.client.rest import ApiException

    caplog.set_level(logging.INFO, logger="services")

    backend = k8s_portal.jobs.backend
    backend.start()
    assert backend.jobs.synced.wait(10)

    def gone() -> bool:
        try:
            list(backend.jobs.stream_events("1", seconds=1))
        except ApiException as exc:
            return exc.status == 410
        return False

    wait_until(gone, timeout=90, interval=2)  # etcd has compacted version 1 away
    relists = backend.jobs.relists
    backend.jobs.rewatch("1")
    outcome(k8s_portal, runtime="1s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-after-410", **EXAMPLE})
    # The dashboard keeps following jobs: the cache listed again and watches on.
    assert finished(k8s_portal, job_id).status is JobStatus.SUCCEEDED
    assert backend.jobs.relists > relists
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "watch of jobs: 410 Gone (1 so far), listing again" in said, said  # an admin can count them


def test_unreachable_cluster_accepts_the_submit_as_waiting_and_it_can_be_cancelled(cluster, namespace, tmp_path):
    dead = tmp_path / "dead-kubeconfig.yaml"
    text = cluster.kubeconfig.read_text()
    import re

    dead.write_text(re.sub(r"server: https://127\.0\.0\.1:\d+", "server: https://127.0.0.1:1", text))
    settings = k8s_settings(cluster, namespace, tmp_path / "portal-data", kubeconfig=str(dead))
    portal = build_portal(settings)
    try:
        user = ME
        job_id = portal.jobs.submit(user, {"name": "k8s-down", **EXAMPLE})
        job = portal.jobs.get(user, job_id)
        assert job.status is JobStatus.SUBMITTING
        assert job.reason == "The cluster cannot be reached; the job will be submitted when it is back."
        portal.sync.tick()  # asked again, still down: it waits on, saying so once
        assert [m for _, _, m in portal.jobs.events(job_id)].count(job.reason) == 1
        portal.jobs.stop(user, job_id)
        job = portal.jobs.get(user, job_id)
        assert (job.status, job.reason) == (JobStatus.STOPPED, "Cancelled before it reached the cluster")
        portal.sync.start()
        wait_until(lambda: portal.jobs.backend.health() == "The cluster cannot be reached right now.", timeout=20)
    finally:
        portal.close()


def test_admin_template_that_sets_privileged_is_refused(cluster, namespace, tmp_path):
    template = tmp_path / "job.yaml"
    template.write_text("spec:\n  template:\n    spec:\n      containers:\n      - securityContext:\n"
                        "          privileged: true\n")
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data", job_template=str(template)))
    try:
        job_id = portal.jobs.submit(ME, {"name": "k8s-privileged", **EXAMPLE})
        job = portal.jobs.get(ME, job_id)
        assert job.status is JobStatus.SUBMIT_FAILED
        assert "spec.template.spec.containers[0].securityContext.privileged" in job.reason
        assert cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name").strip() == ""
    finally:
        portal.close()


def test_admin_template_image_and_node_selector_reach_the_cluster(cluster, namespace, tmp_path):
    template = tmp_path / "job.yaml"
    template.write_text(
        "metadata:\n  annotations:\n    team/experiment: {{ experiment }}\n"
        "spec:\n  template:\n    spec:\n      nodeSelector:\n        kubernetes.io/os: linux\n"
        "      containers:\n      - image: registry.example/ml/train:2.4\n"
    )
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data", job_template=str(template)))
    try:
        job_id = portal.jobs.submit(ME, {"name": "k8s-templated", **EXAMPLE})
        kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
        assert kjob["metadata"]["annotations"]["team/experiment"] == "k8s-templated"
        pod = kjob["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "registry.example/ml/train:2.4"
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert finished(portal, job_id).status is JobStatus.SUCCEEDED
    finally:
        portal.close()


def test_apiserver_frozen_during_a_submit(k8s_portal, cluster, namespace):
    """The apiserver stops answering (its process is frozen) while a job is submitted: the job is accepted as
    Submitting with a sentence, the banner shows, and once it answers again the job is submitted exactly once
    (the frozen apiserver may still carry out the create it had received: that one is adopted)."""
    import os
    import signal

    user = ME
    outcome(k8s_portal, runtime="1s")
    k8s_portal.sync.start()
    wait_until(lambda: k8s_portal.jobs.backend.jobs.synced.is_set())
    pid = cluster.apiserver_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        job_id = k8s_portal.jobs.submit(user, {"name": "k8s-during-outage", **EXAMPLE})
        job = k8s_portal.jobs.get(user, job_id)
        assert job.status is JobStatus.SUBMITTING
        assert job.reason == "The cluster cannot be reached; the job will be submitted when it is back."
        assert k8s_portal.jobs.backend.health() == "The cluster cannot be reached right now."
    finally:
        os.kill(pid, signal.SIGCONT)
    job = wait_until(lambda: (j := k8s_portal.jobs.get(user, job_id)) and not j.is_active and j, timeout=120,
                     interval=0.5)
    assert (job.status, job.reason) == (JobStatus.SUCCEEDED, None)
    kjobs = cluster.kubectl("-n", namespace, "get", "jobs", "-l", f"ml-portal/job-id={job_id}", "-o", "name")
    assert kjobs.split() == [f"job.batch/mlp-{job_id}"]


def test_a_portal_killed_between_create_and_store_update_makes_no_duplicate(k8s_portal, cluster, namespace):
    from datetime import timedelta

    from services.store.orm import utcnow

    user = ME
    outcome(k8s_portal, runtime="3s")
    first = k8s_portal.jobs.submit(user, {"name": "k8s-first", **EXAMPLE})
    # A clone: its row also holds what the portal noted about it (its parent), not only the submitted values.
    job_id = k8s_portal.jobs.submit(user, {"name": "k8s-half-submitted", **EXAMPLE}, parent_id=first)
    # What a portal killed right after the Job's create leaves: the Job in the cluster, the row still Submitting.
    k8s_portal.jobs.mark(job_id, status="Submitting", status_group="Running", backend_ref=None, spec=None,
                         created_at=utcnow() - timedelta(minutes=5))
    k8s_portal.close()
    again = build_portal(k8s_portal.settings)
    try:
        job = finished(again, job_id, timeout=90)
        assert (job.status, job.reason) == (JobStatus.SUCCEEDED, None)  # adopted, not failed nor run twice
        assert job.spec is not None and job.final_metrics
        kjobs = cluster.kubectl("-n", namespace, "get", "jobs", "-l", f"ml-portal/job-id={job_id}", "-o", "name")
        assert kjobs.split() == [f"job.batch/mlp-{job_id}"]
    finally:
        again.close()


def test_max_runtime_on_the_cluster(k8s_portal):
    outcome(k8s_portal, outcome="hang")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-deadline", "max_runtime_hours": 0.001, **EXAMPLE})
    job = finished(k8s_portal, job_id, timeout=90)
    assert (job.status, job.reason) == (JobStatus.FAILED, "Hit max runtime (4 s)")
