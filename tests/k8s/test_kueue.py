"""Jobs queued through a real Kueue on the test control plane (KWOK GPU nodes): a team quota of 8 GPUs, jobs of
4, 4, 4 and 2 GPUs, then an urgent one. What each job's card and page say is checked against what Kueue decided.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import services.portal
from services.backends.base import ActiveJob, queue_statuses, queue_summaries
from services.backends.k8s_kueue import PREEMPTED
from services.models import JobStatus, Role, User
from services.portal import Portal, build_portal
from services.queue_model import QueueStatus
from services.queues import estimate_text, queue_views, waiting_line, waiting_status
from services.store.orm import Job
from tests.conftest import ROOT, wait_until
from tests.k8s.conftest import Cluster, k8s_settings, render_manifests
from tests.k8s.kueue_env import KueueEnv, kueue, pending_in_kueue  # noqa: F401 - the fixture
from tests.k8s.test_kubernetes_backend import until

KUEUE_MANIFESTS = ROOT / "manifests" / "components" / "kueue"
ME = User(name="researcher", role=Role.ADMIN)
EXAMPLE = {"script": "train_example.py", "epochs": 3}


@pytest.fixture(scope="module")
def team_queues(cluster: Cluster, kueue: KueueEnv) -> KueueEnv:  # noqa: F811
    """The admin's cluster-wide Kueue objects from manifests/components/kueue (flavor, team quotas, priorities)."""
    for name in ("resourceflavor.yaml", "clusterqueues.yaml", "priorityclasses.yaml"):
        cluster.kubectl("apply", "-f", str(KUEUE_MANIFESTS / name))
    return kueue


def kueue_portal(cluster: Cluster, namespace: str, tmp_path: Path, env: KueueEnv, **overrides) -> Portal:
    settings = k8s_settings(cluster, namespace, tmp_path / "portal-data", kueue_visibility_url=env.visibility_url,
                            pod_annotations={"kwok.test/outcome": "hang"}, **overrides)
    return build_portal(settings)


@pytest.fixture
def queued_portal(cluster: Cluster, namespace: str, tmp_path: Path, team_queues: KueueEnv) -> Iterator[Portal]:
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a")
    yield portal
    portal.close()
    drain(cluster, namespace)


def drain(cluster: Cluster, namespace: str) -> None:
    """The namespace's Jobs deleted and their Workloads gone, so the team's quota is free for the next test."""
    cluster.kubectl("-n", namespace, "delete", "jobs", "--all", "--wait=true", "--timeout=60s", check=False)
    wait_until(lambda: cluster.kubectl("-n", namespace, "get", "workloads.kueue.x-k8s.io", "-o", "name",
                                       check=False).strip() == "", timeout=60, interval=0.5)


def active(portal: Portal, ids: list[int]) -> list[ActiveJob]:
    with portal.jobs.session() as s:
        rows = s.execute(select(Job.id, Job.backend_ref).where(Job.id.in_(ids))).all()
    return [ActiveJob(r.id, dict(r.backend_ref or {}), 8.0) for r in rows]


def admitted(cluster: Cluster, namespace: str) -> set[str]:
    """The Jobs whose Workloads Kueue has admitted (quota reserved), by name: the cluster's own answer."""
    out = json.loads(cluster.kubectl("-n", namespace, "get", "workloads.kueue.x-k8s.io", "-o", "json"))
    names = set()
    for wl in out["items"]:
        conds = {c["type"]: c["status"] for c in (wl.get("status") or {}).get("conditions") or []}
        if conds.get("QuotaReserved") == "True":
            names |= {r["name"] for r in wl["metadata"]["ownerReferences"] if r["kind"] == "Job"}
    return names


def submit(portal: Portal, name: str, gpus: int, priority: str) -> int:
    return portal.jobs.submit(ME, {"name": name, "gpus": gpus, "priority": priority, **EXAMPLE})


def preempted_in_cluster(cluster: Cluster, namespace: str) -> set[str]:
    out = json.loads(cluster.kubectl("-n", namespace, "get", "workloads.kueue.x-k8s.io", "-o", "json"))
    return {r["name"] for wl in out["items"] for r in wl["metadata"]["ownerReferences"] if r["kind"] == "Job"
            and any(c["type"] == "Evicted" and c["status"] == "True" and c["reason"] == "Preempted"
                    for c in (wl.get("status") or {}).get("conditions") or [])}


def test_team_quota_positions_blockers_and_preemption_as_kueue_decides(queued_portal, cluster, namespace,
                                                                        team_queues, monkeypatch):
    portal = queued_portal
    a = submit(portal, "first", 4, "low")
    b = submit(portal, "second", 4, "low")
    until(portal, a, lambda j: j.status is JobStatus.RUNNING, timeout=90)
    until(portal, b, lambda j: j.status is JobStatus.RUNNING, timeout=90)
    c = submit(portal, "third", 4, "low")
    time.sleep(1.1)  # Kueue orders equal priorities by creation time, which the apiserver keeps to the second
    d = submit(portal, "small", 2, "low")
    ids = [a, b, c, d]

    # The team's 8 GPUs are held by the first two: the other two wait, in Kueue's order, saying why.
    job_c = until(portal, c, lambda j: "more needed" in (j.reason or ""), timeout=60)
    job_d = until(portal, d, lambda j: "more needed" in (j.reason or ""), timeout=60)
    assert job_c.status is JobStatus.QUEUED and job_d.status is JobStatus.QUEUED
    assert job_c.reason == "team-a's quota of 8 GPUs is in use; 4 more needed"
    assert job_d.reason == "team-a's quota of 8 GPUs is in use; 2 more needed"
    assert admitted(cluster, namespace) == {f"mlp-{a}", f"mlp-{b}"}
    assert pending_in_kueue(cluster, team_queues, namespace, "team-a") == [f"mlp-{c}", f"mlp-{d}"]
    places = wait_until(lambda: (p := queue_statuses(portal.jobs.backend, active(portal, ids)))
                        and {c, d} <= set(p) and p, timeout=30, interval=0.5)
    assert (places[c].queue, places[c].position, places[c].ahead) == ("team-a", 1, [])
    assert (places[d].position, places[d].ahead) == (2, [c])
    assert set(places[c].holders) == {a, b} and places[c].priority == "low"
    # The card and the job page say it in one line (services/queues.py), from what the sync loop last read.
    assert waiting_line(waiting_status(portal.jobs, portal.jobs.get(ME, d))) == (
        "2nd in the queue of team-a · Team-a's quota of 8 GPUs is in use; 2 more needed · Estimated start: unknown")
    summary = next(q for q in queue_summaries(portal.jobs.backend) if q.name == "team-a")
    assert (summary.quota_gpus, summary.used_gpus, summary.waiting) == (8, 8, [c, d])
    # Thirty people looking at the Queues page and the waiting job's card cost the cluster no request at all:
    # pages read what the sync loop fetched.
    before = portal.jobs.backend.requests
    for _ in range(30):
        views = queue_views(portal.jobs, ME)
        waiting_status(portal.jobs, portal.jobs.get(ME, d))
    assert portal.jobs.backend.requests == before
    assert [line.id for line in next(v for v in views if v.summary.name == "team-a").waiting] == [c, d]

    # An urgent job takes a low-priority job's GPUs: that one goes back to the queue (not to Failed), saying so.
    e = submit(portal, "urgent-demo", 4, "urgent")
    ids.append(e)
    until(portal, e, lambda j: j.status is JobStatus.RUNNING, timeout=90)
    preempted = wait_until(lambda: preempted_in_cluster(cluster, namespace), timeout=30, interval=0.5)
    assert len(preempted) == 1 and preempted <= {f"mlp-{a}", f"mlp-{b}"}
    victim = a if preempted == {f"mlp-{a}"} else b
    survivor = b if victim == a else a
    job_v = until(portal, victim, lambda j: j.reason == PREEMPTED, timeout=60)
    assert job_v.status is JobStatus.QUEUED
    assert portal.jobs.get(ME, survivor).status is JobStatus.RUNNING
    assert admitted(cluster, namespace) == {f"mlp-{survivor}", f"mlp-{e}"}
    kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{victim}", "-o", "json"))
    assert kjob["spec"]["suspend"] is True
    # Its place in line is Kueue's: the portal's positions follow the visibility API's order.
    order = pending_in_kueue(cluster, team_queues, namespace, "team-a")
    assert sorted(order) == sorted(f"mlp-{j}" for j in (c, d, victim))
    places = wait_until(lambda: (p := queue_statuses(portal.jobs.backend, active(portal, ids)))
                        and victim in p and p[victim].position > 0 and p, timeout=30, interval=0.5)
    assert [f"mlp-{j}" for j in sorted((c, d, victim), key=lambda j: places[j].position)] == order
    assert places[victim].blocker == PREEMPTED
    # Its card's line and its page say so, in those words (the card draws waiting_line; the page under AppTest).
    line = waiting_line(waiting_status(portal.jobs, portal.jobs.get(ME, victim)))
    assert line.endswith(f" · {PREEMPTED} · Estimated start: unknown"), line
    monkeypatch.setattr(services.portal, "_portal", portal)
    page = AppTest.from_file(str(ROOT / "portal_app.py"), default_timeout=30).run()
    page.switch_page("pages/job.py")
    page.query_params["id"] = str(victim)
    page.run()
    assert not page.exception
    shown = [i.value for i in page.info] + [c.value for c in page.caption] + [m.value for m in page.markdown]
    assert any(PREEMPTED in text for text in shown), shown
    assert not any("Failed" in text for text in shown), shown
    for job_id in ids:  # nothing failed along the way
        assert portal.jobs.get(ME, job_id).status in (JobStatus.RUNNING, JobStatus.QUEUED)

    # Stopping a waiting job takes it out of Kueue's line; those behind it move up.
    first = order[0]
    stopped = int(first.removeprefix("mlp-"))
    portal.jobs.stop(ME, stopped)
    assert until(portal, stopped, lambda j: not j.is_active).status is JobStatus.STOPPED
    order = wait_until(lambda: (o := pending_in_kueue(cluster, team_queues, namespace, "team-a"))
                       and first not in o and o, timeout=30, interval=0.5)
    rest = [int(name.removeprefix("mlp-")) for name in order]

    def moved_up() -> dict[int, QueueStatus] | None:
        portal.sync.tick()
        p = queue_statuses(portal.jobs.backend, active(portal, ids))
        return p if stopped not in p and [p[j].position for j in rest if j in p] == [1, 2] else None

    places = wait_until(moved_up, timeout=30, interval=0.5)
    assert places[rest[0]].ahead == [] and places[rest[1]].ahead == [rest[0]]


def test_a_queue_that_does_not_exist_gets_a_sentence_at_submit(cluster, namespace, tmp_path, team_queues):
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="no-such-queue")
    try:
        job = portal.jobs.get(ME, submit(portal, "lost-in-queue", 1, "normal"))
    finally:
        portal.close()
    assert job.status is JobStatus.SUBMIT_FAILED
    assert job.reason.startswith(f"The queue 'no-such-queue' does not exist in namespace {namespace}")
    assert cluster.kubectl("-n", namespace, "get", "jobs", "-o", "name").strip() == ""


def test_without_a_configured_queue_jobs_run_as_before(cluster, namespace, tmp_path, team_queues):
    portal = kueue_portal(cluster, namespace, tmp_path, team_queues)
    try:
        job_id = submit(portal, "not-queued", 1, "normal")
        until(portal, job_id, lambda j: j.status is JobStatus.RUNNING, timeout=60)
    finally:
        portal.close()
    kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o", "json"))
    assert not kjob["spec"].get("suspend") and "kueue.x-k8s.io/queue-name" not in kjob["metadata"]["labels"]


def test_the_kueue_component_deploys_and_the_portal_account_queues_with_only_its_rights(
        cluster, namespace, tmp_path, team_queues, deployed):
    rendered = render_manifests(cluster, tmp_path / "kq", "overlays/kubernetes", namespace, ("components/kueue",))
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ml-portal", "namespace": namespace}]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("ml-portal-config"))
    assert config["data"]["PORTAL_KUEUE_DEFAULT_QUEUE"] == "team-b"
    assert json.loads(config["data"]["PORTAL_KUEUE_GROUP_QUEUES"]) == {"team-a": "team-a", "team-b": "team-b"}
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(rendered))
    assert out.count("(server dry run)") == len(docs), out
    # What an admin adds with the component: the queues and the two cluster-wide reads.
    keep = [d for d in docs if d["kind"] in ("LocalQueue", "ClusterRole", "ClusterRoleBinding")]
    (tmp_path / "kueue-part.yaml").write_text(yaml.safe_dump_all(keep))
    cluster.kubectl("apply", "-f", str(tmp_path / "kueue-part.yaml"))
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data", kubeconfig=str(deployed),
                                       kueue_default_queue="team-a", kueue_group_queues={"team-b": "team-b"},
                                       kueue_visibility_url=team_queues.visibility_url,
                                       pod_annotations={"kwok.test/outcome": "hang"}))
    bob = User(name="bob", groups=("staff", "team-b"))
    try:
        small = portal.jobs.submit(bob, {"name": "fits", "gpus": 1, "priority": "normal", **EXAMPLE})
        until(portal, small, lambda j: j.status is JobStatus.RUNNING, timeout=90)
        huge = portal.jobs.submit(bob, {"name": "too-big", "gpus": 12, "priority": "normal", **EXAMPLE})
        job = until(portal, huge, lambda j: "whole quota" in (j.reason or ""), timeout=60)
        kjob = json.loads(cluster.kubectl("-n", namespace, "get", "job", f"mlp-{small}", "-o", "json"))
    finally:
        portal.close()
        drain(cluster, namespace)
        cluster.kubectl("delete", "-f", str(tmp_path / "kueue-part.yaml"), "--wait=false", check=False)
    assert job.status is JobStatus.QUEUED
    assert job.reason == "It asks for more GPUs than team-b's whole quota (8): it cannot start in this queue"
    labels = kjob["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-b" and labels["kueue.x-k8s.io/priority-class"] == "normal"


def test_the_estimated_start_brackets_when_kueue_really_starts_the_job(queued_portal, cluster, namespace):
    portal = queued_portal
    portal.settings.pod_annotations = {"kwok.test/runtime": "12s"}  # the two running jobs end after 12 s
    first = [portal.jobs.submit(ME, {"name": f"holder-{i}", "gpus": 4, "max_runtime_hours": 0.02, **EXAMPLE})
             for i in (1, 2)]
    for job_id in first:
        until(portal, job_id, lambda j: j.status is JobStatus.RUNNING, timeout=90)
    portal.settings.pod_annotations = {"kwok.test/outcome": "hang"}
    waiting = submit(portal, "next-in-line", 4, "normal")

    def estimated() -> QueueStatus | None:
        portal.sync.tick()
        st = waiting_status(portal.jobs, portal.jobs.get(ME, waiting))
        return st if st is not None and st.estimate is not None else None

    status = wait_until(estimated, timeout=60, interval=0.5)
    est = status.estimate
    assert waiting_line(status).endswith(f"Estimated start: {estimate_text(status)}")
    started = until(portal, waiting, lambda j: j.status is JobStatus.RUNNING, timeout=120)
    actual = started.started_at if started.started_at.tzinfo else started.started_at.replace(tzinfo=UTC)
    middle = est.earliest + (est.latest - est.earliest) / 2
    print(f"estimate {est.earliest:%H:%M:%S}..{est.latest:%H:%M:%S}, started {actual:%H:%M:%S}, "
          f"middle off by {(actual - middle).total_seconds():+.0f} s")
    # Kubernetes keeps times to the second: a second of slack on each side.
    assert est.earliest - timedelta(seconds=1) <= actual <= est.latest + timedelta(seconds=1)
