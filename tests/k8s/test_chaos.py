"""The chaos run of issue 16, bounded: a real portal process takes submissions through its API while the
kube-apiserver is killed and started again three times, the portal itself is killed twice mid-submit, etcd and
the controller-manager are restarted once and a pod is deleted mid-run. Then every job's outcome must be the
cluster's: none lost, duplicated, ghosted, stuck or wrong, and every finished job's log archived."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import PortalServer, create_token, wait_until

FINISHED = {"Succeeded", "Failed", "Stopped", "Submit failed"}


class Portal:
    """The portal process as an API user sees it; `kill` is a crash (SIGKILL), `start` a restart on the same data."""

    def __init__(self, data_dir, env: dict[str, str], token: str):
        self.data_dir, self.env, self.token = data_dir, env, token
        self.server: PortalServer | None = None
        self.api: httpx.Client | None = None

    def start(self) -> None:
        self.server = PortalServer(self.data_dir, env=self.env).start()
        self.api = httpx.Client(base_url=f"{self.server.url}/api/v1", timeout=30,
                                headers={"Authorization": f"Bearer {self.token}"})

    def kill(self) -> None:
        assert self.server is not None and self.server.proc is not None
        self.server.proc.kill()
        self.server.proc.wait()

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.server is not None:
            self.server.stop()

    def submit(self, name: str, accepted: tuple[int, ...] = (201, 202)) -> int:
        assert self.api is not None
        answer = self.api.post("/jobs", json={"name": name, "script": "train_example.py", "epochs": 3})
        assert answer.status_code in accepted, answer.text
        return answer.json()["id"]

    def jobs(self) -> list[dict]:
        assert self.api is not None
        return self.api.get("/jobs", params={"limit": 200}).json()["jobs"]


def submit_while_killed(portal: Portal, names: list[str]) -> None:
    """Submissions in flight while the portal is killed: whatever of them it recorded must still come out right."""

    def post() -> None:
        for name in names:
            try:
                portal.submit(name)
            except (httpx.HTTPError, AssertionError):
                return  # the portal died under this request

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.4)
    portal.kill()
    thread.join(60)
    portal.start()


@pytest.mark.timeout(600)  # ~3 minutes here; the bound leaves room for a slower machine
def test_every_job_keeps_its_true_outcome_through_chaos(cluster, namespace, tmp_path):
    data_dir = tmp_path / "portal-data"
    env = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(cluster.kubeconfig), "PORTAL_NAMESPACE": namespace,
           "PORTAL_SYNC_INTERVAL_SECONDS": "0.5", "PORTAL_KUBE_REQUEST_TIMEOUT_SECONDS": "5",
           "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/runtime": "5s"})}
    portal = Portal(data_dir, env, create_token(data_dir, "alice"))
    portal.start()
    try:
        for i in range(3):
            portal.submit(f"warm-{i}", accepted=(201,))
        for round_ in range(3):
            with cluster.apiserver_down():
                for i in range(2):
                    portal.submit(f"outage{round_}-{i}", accepted=(202,))
                time.sleep(2)
            for i in range(2):
                portal.submit(f"after{round_}-{i}")
            if round_ == 0:
                submit_while_killed(portal, [f"killed-a{i}" for i in range(3)])
        # A pod deleted mid-run: its job's outcome is whatever the cluster makes of it.
        victim = wait_until(lambda: cluster.kubectl("-n", namespace, "get", "pods", "-o", "name",
                                                    "--field-selector=status.phase=Running").split(), timeout=90)[0]
        cluster.kubectl("-n", namespace, "delete", victim, "--wait=false")
        with cluster.down("etcd"):
            time.sleep(2)
        with cluster.down("kube-controller-manager"):
            time.sleep(2)
        submit_while_killed(portal, [f"killed-b{i}" for i in range(3)])
        for i in range(2):
            portal.submit(f"last-{i}")

        # Nothing stuck: every job ends, within the bound.
        jobs = wait_until(lambda: (js := portal.jobs()) and all(j["status"] in FINISHED for j in js) and js,
                          timeout=240, interval=2)
        kube = json.loads(cluster.kubectl("-n", namespace, "get", "jobs", "-o", "json"))["items"]
        by_id: dict[str, list[dict]] = {}
        for kjob in kube:
            by_id.setdefault(kjob["metadata"]["labels"]["ml-portal/job-id"], []).append(kjob)
        ids = {str(j["id"]) for j in jobs}
        assert set(by_id) <= ids, f"ghosts: Jobs the portal does not know {set(by_id) - ids}"
        for job in jobs:
            kjobs = by_id.get(str(job["id"]), [])
            assert len(kjobs) <= 1, f"job {job['id']} ran {len(kjobs)} times"
            if job["status"] == "Submit failed":  # true only for a portal killed before the Job could be made
                assert not kjobs and job["reason"].startswith("The portal stopped"), job
                continue
            # Nobody was told a job was lost or stopped: every outage and crash here is survivable.
            assert job["status"] in ("Succeeded", "Failed"), job
            assert kjobs, f"job {job['id']} ({job['status']}) never reached the cluster"
            conditions = {c["type"] for c in kjobs[0]["status"].get("conditions") or [] if c["status"] == "True"}
            if "Complete" in conditions:
                assert (job["status"], job["reason"]) == ("Succeeded", None), job
                tail = portal.api.get(f"/jobs/{job['id']}/logs", params={"tail": 5}).json()["lines"]
                assert tail and tail[-1].startswith("Training finished"), (job["id"], tail)
                assert job["started_at"] and job["final_metrics"], job
            else:
                assert "Failed" in conditions, kjobs[0]["status"]
                assert (job["status"], job["reason"]) == ("Failed", "The pod was deleted"), job
        counts = {status: sum(j["status"] == status for j in jobs) for status in FINISHED}
        print(f"chaos: {len(jobs)} jobs, {counts}, {len(kube)} Jobs in the cluster")
        assert counts["Succeeded"] >= 15
    finally:
        portal.stop()
