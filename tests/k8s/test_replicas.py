"""Two portal replicas on one PostgreSQL and one data folder, on the real control plane (issue 16, "More than one
portal"): only the holder of the Lease runs the sync loop; jobs are submitted through both; the leader is SIGKILLed
while they run and the other takes over within the lease, every job ends with its true outcome, its timeline has no
transition twice and its log is archived once. Then a graceful stop hands the lease over at once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from services.config import Settings
from services.leader import LeaseElector
from services.models import JobStatus, User
from services.portal import build_portal
from services.queues import queue_views, waiting_line, waiting_status
from tests.conftest import PortalServer, portal_on, wait_until
from tests.k8s.conftest import k8s_settings, recorded_example_output
from tests.k8s.kueue_env import kueue  # noqa: F401 - the fixture team_queues needs
from tests.k8s.test_kueue import KUEUE_MANIFESTS, ME, drain, kueue_portal, submit, team_queues  # noqa: F401

LEASE_SECONDS = 6
EXPECTED = ["Submitting", "Queued", "Running", "Succeeded"]


class Replica:
    """One portal process as its users reach it: its own address, the shared store and data folder."""

    def __init__(self, name: str, data_dir, env: dict[str, str], token: str):
        self.name = name
        self.server = PortalServer(data_dir, env=env | {"POD_NAME": name})
        self.token = token
        self.api: httpx.Client | None = None

    def start(self) -> Replica:
        self.server.start()
        self.api = httpx.Client(base_url=f"{self.server.url}/api/v1", timeout=30,
                                headers={"Authorization": f"Bearer {self.token}"})
        return self

    def health(self) -> dict:
        return httpx.get(f"{self.server.url}/healthz", timeout=5).json()

    def submit(self, name: str) -> int:
        assert self.api is not None
        answer = self.api.post("/jobs", json={"name": name, "script": "train_example.py", "epochs": 3})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def jobs(self) -> list[dict]:
        assert self.api is not None
        return self.api.get("/jobs", params={"limit": 200}).json()["jobs"]

    def kill(self) -> None:
        assert self.server.proc is not None
        self.server.proc.kill()
        self.server.proc.wait()

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        self.server.stop()


def replica_env(cluster, namespace: str, database_url: str) -> dict[str, str]:
    return {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(cluster.kubeconfig),
            "PORTAL_NAMESPACE": namespace, "PORTAL_DATABASE_URL": database_url,
            "PORTAL_SYNC_INTERVAL_SECONDS": "0.5", "PORTAL_KUBE_REQUEST_TIMEOUT_SECONDS": "5",
            "PORTAL_LEADER_LEASE_SECONDS": str(LEASE_SECONDS),  # auto: on (kubernetes and PostgreSQL)
            "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/runtime": "10s"})}


def token_for(data_dir, database_url: str, user: str) -> str:
    p = build_portal(Settings(data_dir=data_dir, backend="local", database_url=database_url))
    try:
        return p.tokens.create(User(name=user), "test")[1]
    finally:
        p.close()


def leads(replica: Replica) -> bool:
    return replica.health()["leader"] is True


@pytest.mark.timeout(300)  # ~1.5 minutes here
def test_two_replicas_survive_the_loss_of_the_leader(cluster, namespace, pg_server, tmp_path):
    url = pg_server.url(pg_server.create_database())
    data_dir = tmp_path / "portal-data"
    env = replica_env(cluster, namespace, url)
    token = token_for(data_dir, url, "alice")
    a = Replica("portal-a", data_dir, env, token).start()
    b: Replica | None = None
    try:
        wait_until(lambda: leads(a), timeout=20, interval=0.3)
        b = Replica("portal-b", data_dir, env, token).start()
        health = b.health()
        assert (health["leader"], health["leader_holder"], health["leader_election"]) == (False, "portal-a", "on")

        # Pages and the API work on both: jobs are submitted through each, and each lists all of them.
        ids = [a.submit(f"via-a-{i}") for i in range(2)] + [b.submit(f"via-b-{i}") for i in range(2)]
        wait_until(lambda: all(j["status"] == "Running" for j in b.jobs()), timeout=60, interval=0.5)
        assert {j["id"] for j in a.jobs()} == set(ids)
        assert b.health()["sync"]["ticks"] == 0, "the follower ran the sync loop"

        a.kill()  # the leader dies while every job runs
        killed = time.monotonic()
        wait_until(lambda: leads(b), timeout=3 * LEASE_SECONDS, interval=0.2)
        took = time.monotonic() - killed
        assert took <= LEASE_SECONDS + 3, f"the follower took {took:.1f} s to lead"
        assert b.health()["leader_holder"] == "portal-b"
        ids.append(b.submit("after-the-loss"))

        jobs = wait_until(lambda: (js := b.jobs()) and all(j["status"] not in ("Submitting", "Queued", "Running")
                                                          for j in js) and js, timeout=90, interval=0.5)
        assert sorted(j["id"] for j in jobs) == sorted(ids)
        recorded = recorded_example_output()
        with portal_on(url, tmp_path / "reader") as reader:
            for job in jobs:
                assert (job["status"], job["reason"]) == ("Succeeded", None), job
                assert job["started_at"] and job["final_metrics"], job
                events = [(status, message) for _, status, message in reader.jobs.events(job["id"])]
                changes = [s for i, (s, _) in enumerate(events) if i == 0 or events[i - 1][0] != s]
                assert changes == EXPECTED, (job["id"], events)
                twice = [e for e, n in Counter(events).items() if n > 1]
                assert not twice, f"job {job['id']}: applied twice: {twice}"
                # Archived once: the pod's whole log, each line once (two replicas pulling would append it twice).
                archived = (data_dir / "jobs" / str(job["id"]) / "job.log").read_text().splitlines()
                assert archived == recorded, (job["id"], len(archived), len(recorded))

        # A rolling update: the new replica follows, and the old leader's graceful stop hands the lease over at once.
        a = Replica("portal-a2", data_dir, env, token).start()
        assert a.health()["leader"] is False
        b.stop()
        stopped = time.monotonic()
        wait_until(lambda: leads(a), timeout=3 * LEASE_SECONDS, interval=0.2)
        assert time.monotonic() - stopped < LEASE_SECONDS, "the lease was not handed back"
        last = a.submit("after-the-handover")
        done = wait_until(lambda: next(j for j in a.jobs() if j["id"] == last)["status"] == "Succeeded", timeout=60)
        assert done
    finally:
        a.stop()
        if b is not None:
            b.stop()
        pg_server.drop_database(url.rsplit("/", 1)[1])


def test_a_followers_pages_show_kueue_places_in_line(cluster, namespace, tmp_path, pg_server,
                                                     team_queues):  # noqa: F811
    """The Queues page and a waiting job's card on a follower say its place in Kueue's line, as on the leader."""
    cluster.kubectl("-n", namespace, "apply", "-f", str(KUEUE_MANIFESTS / "localqueues.yaml"))
    url = pg_server.url(pg_server.create_database())
    portals = []
    for name in ("kueue-a", "kueue-b"):  # one process here: each replica its own name
        p = kueue_portal(cluster, namespace, tmp_path, team_queues, kueue_default_queue="team-a", database_url=url)
        p.sync.leadership = LeaseElector(p.jobs.backend.api, namespace, p.settings.leader_lease_name, LEASE_SECONDS,
                                         5, me=name)
        portals.append(p)
    leader, follower = portals
    try:
        leader.sync.start()
        wait_until(leader.sync.leadership.held, timeout=20, interval=0.2)
        follower.sync.start()
        first = submit(follower, "holds-the-quota", 8, "normal")
        second = submit(follower, "waits", 8, "normal")

        def line() -> str:  # what the waiting job's card says (nothing until the job waits)
            status = waiting_status(follower.jobs, follower.jobs.get(ME, second))
            return waiting_line(status) if status else ""

        wait_until(lambda: line().startswith("1st"), timeout=60, interval=0.5)
        assert line().startswith("1st in the queue of team-a · Team-a's quota of 8 GPUs is in use; 8 more needed")
        team_a = next(v for v in queue_views(follower.jobs, ME) if v.summary.name == "team-a")
        assert [w.id for w in team_a.waiting] == [second] and team_a.summary.used_gpus == 8
        assert follower.jobs.get(ME, first).status is JobStatus.RUNNING
        assert not follower.sync.leadership.held() and follower.sync.ticks == 0, "the follower applied changes"
    finally:
        for p in portals:
            p.close()
        drain(cluster, namespace)
        pg_server.drop_database(url.rsplit("/", 1)[1])


def test_a_replica_that_loses_the_lease_stops_applying_at_once(cluster, namespace, tmp_path, pg_server):
    """Another replica's write to the Lease (as when this one was thought dead) stops this one's sync loop at its
    next renewal: a job that completes meanwhile stays Running here until this replica holds the lease again."""
    url = pg_server.url(pg_server.create_database())
    portal = build_portal(k8s_settings(cluster, namespace, tmp_path / "portal-data", database_url=url,
                                       leader_lease_seconds=LEASE_SECONDS,
                                       pod_annotations={"kwok.test/runtime": "5s"}))
    sync = portal.sync
    try:
        sync.start()
        wait_until(sync.leadership.held, timeout=20, interval=0.2)
        job_id = portal.jobs.submit(ME, {"name": "outlived-its-lease", "script": "train_example.py", "epochs": 3})
        wait_until(lambda: portal.jobs.get(ME, job_id).status is JobStatus.RUNNING, timeout=60, interval=0.2)

        elsewhere = threading.Event()

        def hold_elsewhere() -> None:  # another replica holding the lease, renewing it every second
            while True:
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                cluster.kubectl("-n", namespace, "patch", "lease", portal.settings.leader_lease_name, "--type=merge",
                                "-p", json.dumps({"spec": {"holderIdentity": "portal-elsewhere", "renewTime": stamp}}))
                if elsewhere.wait(1.0):
                    return

        intruder = threading.Thread(target=hold_elsewhere, daemon=True)
        intruder.start()
        try:
            wait_until(lambda: not sync.leadership.held(), timeout=LEASE_SECONDS / 3 + 3, interval=0.1)
            assert sync.leadership.holder() == "portal-elsewhere"
            time.sleep(1)  # a tick already past its last fence finishes
            ticks = sync.ticks
            wait_until(lambda: "Complete" in cluster.kubectl("-n", namespace, "get", "job", f"mlp-{job_id}", "-o",
                                                             "jsonpath={.status.conditions[*].type}"), timeout=30)
            time.sleep(2)
            assert portal.jobs.get(ME, job_id).status is JobStatus.RUNNING, "applied after the lease was lost"
            assert sync.ticks == ticks and not sync.leadership.held()
        finally:
            elsewhere.set()
            intruder.join(10)

        # The other stops renewing: after a whole lease this replica takes it back and records the real outcome.
        wait_until(sync.leadership.held, timeout=3 * LEASE_SECONDS, interval=0.2)
        job = wait_until(lambda: (j := portal.jobs.get(ME, job_id)).status is JobStatus.SUCCEEDED and j, timeout=30)
        assert job.reason is None and job.final_metrics
    finally:
        portal.close()
        pg_server.drop_database(url.rsplit("/", 1)[1])
