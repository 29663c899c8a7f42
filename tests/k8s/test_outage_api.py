"""A cluster outage as a script using the REST API lives it, against a real portal process and the real control
plane whose apiserver is killed and started again: what it submits is accepted (202, Submitting) and carried out
once when the cluster is back, what it cancels never starts, and a stop it asks for is carried out then."""

from __future__ import annotations

import json

import httpx

from tests.conftest import PortalServer, create_token, wait_until

WAITING = "The cluster cannot be reached; the job will be submitted when it is back."


def test_submit_cancel_and_stop_during_an_apiserver_outage(cluster, namespace, tmp_path):
    data_dir = tmp_path / "portal-data"
    token = create_token(data_dir, "alice")
    env = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(cluster.kubeconfig), "PORTAL_NAMESPACE": namespace,
           "PORTAL_SYNC_INTERVAL_SECONDS": "0.5", "PORTAL_KUBE_REQUEST_TIMEOUT_SECONDS": "5",
           "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/outcome": "hang"})}
    server = PortalServer(data_dir, env=env).start()
    api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def job(job_id: int) -> dict:
        return api.get(f"/jobs/{job_id}").json()

    def kube_jobs(job_id: int) -> list[str]:
        return cluster.kubectl("-n", namespace, "get", "jobs", "-l", f"ml-portal/job-id={job_id}", "-o",
                               "name").split()

    try:
        running = api.post("/jobs", json={"name": "before-outage", "script": "train_example.py"})
        assert running.status_code == 201 and running.json()["status"] == "Queued"
        running_id = running.json()["id"]
        wait_until(lambda: job(running_id)["status"] == "Running", timeout=60, interval=0.5)
        with cluster.apiserver_down():
            answer = api.post("/jobs", json={"name": "during-outage", "script": "train_example.py"})
            # Not 201 "Submit failed": accepted, not started, and the answer says so.
            assert answer.status_code == 202, answer.text
            assert (answer.json()["status"], answer.json()["reason"]) == ("Submitting", WAITING)
            waiting_id = answer.json()["id"]
            cancelled_id = api.post("/jobs", json={"name": "cancelled", "script": "train_example.py"}).json()["id"]
            cancelled = api.post(f"/jobs/{cancelled_id}/stop", json={})
            assert cancelled.status_code == 202
            assert (cancelled.json()["status"], cancelled.json()["reason"]) == (
                "Stopped", "Cancelled before it reached the cluster")
            stop = api.post(f"/jobs/{running_id}/stop", json={})
            assert stop.status_code == 202, stop.text
            # The job page says the stop is pending, and why.
            assert (stop.json()["status"], stop.json()["reason"]) == (
                "Running", "Stop pending: the cluster cannot be reached; the job will be stopped when it is back.")
        # Back: the stop is carried out, the waiting job is submitted once, the cancelled one never.
        wait_until(lambda: job(running_id)["status"] == "Stopped", timeout=120, interval=0.5)
        assert job(running_id)["reason"] == "Stopped by user"
        wait_until(lambda: job(waiting_id)["status"] == "Running", timeout=60, interval=0.5)
        assert kube_jobs(waiting_id) == [f"job.batch/mlp-{waiting_id}"]
        wait_until(lambda: not kube_jobs(running_id), timeout=30, interval=0.5)
        assert kube_jobs(cancelled_id) == [] and job(cancelled_id)["status"] == "Stopped"
    finally:
        api.close()
        server.stop()
