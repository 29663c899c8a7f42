"""The local backend's queue with real child processes: GPU limits, priority order, per-user limits, the estimate
against what happens, and a portal restart in the middle (a real portal process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest

from services import queues
from services.models import JobStatus, User
from tests.conftest import PortalServer, create_token, run_to_end, wait_until

LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_LOCAL_GPUS", "4")


def submit(portal, user, script, gpus, name="q", **kw) -> int:
    return portal.jobs.submit(user, {"name": name, "script": script, "gpus": gpus, **kw})


def status(portal, user, job_id) -> JobStatus:
    portal.sync.tick()
    return portal.jobs.get(user, job_id).status


def wait_status(portal, user, job_id, want: JobStatus, timeout: float = 20) -> None:
    wait_until(lambda: status(portal, user, job_id) is want, timeout=timeout)


def place(portal, user, job_id):
    return queues.waiting_status(portal.jobs, portal.jobs.get(user, job_id))


def test_jobs_wait_for_gpus_and_start_in_priority_then_submission_order(four_gpus, portal, user, workspace_script):
    s = workspace_script("loop.py", LOOP)
    a, b = submit(portal, user, s, 2, "a"), submit(portal, user, s, 2, "b")
    wait_status(portal, user, a, JobStatus.RUNNING)
    wait_status(portal, user, b, JobStatus.RUNNING)
    big = submit(portal, user, s, 4, "big")
    small = submit(portal, user, s, 2, "small")
    assert status(portal, user, big) is JobStatus.QUEUED and status(portal, user, small) is JobStatus.QUEUED
    first = place(portal, user, big)
    assert (first.position, first.ahead) == (1, [])
    assert first.blocker == f"4 of this machine's 4 GPUs are in use by #{a} and #{b}; this job needs 4"
    second = place(portal, user, small)
    assert (second.position, second.ahead) == (2, [big])
    urgent = submit(portal, user, s, 2, "urgent", priority="urgent")
    assert status(portal, user, urgent) is JobStatus.QUEUED
    assert place(portal, user, urgent).position == 1 and place(portal, user, big).ahead == [urgent]

    portal.jobs.stop(user, a)  # its 2 GPUs go to the urgent job at once, not to the older ones
    wait_status(portal, user, urgent, JobStatus.RUNNING)
    assert status(portal, user, big) is JobStatus.QUEUED and status(portal, user, small) is JobStatus.QUEUED
    running_gpus = {portal.jobs.get(user, j).spec["env"]["CUDA_VISIBLE_DEVICES"] for j in (b, urgent)}
    assert len(running_gpus) == 2  # each got GPUs of its own
    portal.jobs.stop(user, b)
    run_to_end(portal, user, b)
    # 2 GPUs are free and the small job needs 2, but the big one is ahead of it: the big one is not starved.
    assert status(portal, user, small) is JobStatus.QUEUED
    assert place(portal, user, small).blocker == (
        f"#{big} is ahead of it and waits for 4 GPUs; jobs start in priority, then submission order")
    portal.jobs.stop(user, urgent)
    wait_status(portal, user, big, JobStatus.RUNNING)
    assert portal.jobs.get(user, big).spec["env"]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert status(portal, user, small) is JobStatus.QUEUED
    portal.jobs.stop(user, big)
    wait_status(portal, user, small, JobStatus.RUNNING)
    portal.jobs.stop(user, small)
    run_to_end(portal, user, small)


def test_a_stopped_waiting_job_leaves_the_queue(four_gpus, portal, user, workspace_script):
    s = workspace_script("loop.py", LOOP)
    holder = submit(portal, user, s, 4, "holder")
    waiting = submit(portal, user, s, 1, "waiting")
    assert status(portal, user, waiting) is JobStatus.QUEUED
    portal.jobs.stop(user, waiting)
    job = run_to_end(portal, user, waiting)
    assert (job.status, job.reason, job.started_at) == (JobStatus.STOPPED, "Stopped by user before it started", None)
    portal.jobs.stop(user, holder)
    run_to_end(portal, user, holder)


def test_a_portal_that_died_while_starting_a_job_does_not_start_it_twice(four_gpus, portal, user, workspace_script):
    job_id = submit(portal, user, workspace_script("loop.py", LOOP), 1)
    wait_status(portal, user, job_id, JobStatus.RUNNING)
    # As after a crash between starting the runner and recording it: the row still says "waiting".
    portal.jobs.mark(job_id, backend_ref={"waiting": True}, status=JobStatus.QUEUED.value)
    wait_status(portal, user, job_id, JobStatus.RUNNING)
    runners = [p for p in psutil.process_iter(["cmdline"])
               if (cmd := p.info["cmdline"] or []) and "local_runner.py" in " ".join(cmd)
               and str(portal.jobs.backend.job_dir(job_id)) in cmd]
    assert len(runners) == 1, runners  # the one runner, adopted
    portal.jobs.stop(user, job_id)
    assert run_to_end(portal, user, job_id).status is JobStatus.STOPPED


def test_per_user_gpu_limit(monkeypatch, four_gpus, portal, workspace_script):
    monkeypatch.setattr(portal.settings, "local_max_gpus_per_user", 2)
    ann, ben = User("ann"), User("ben")
    s = workspace_script("loop.py", LOOP)
    first = submit(portal, ann, s, 2, "ann-1")
    second = submit(portal, ann, s, 1, "ann-2")
    other = submit(portal, ben, s, 2, "ben-1")
    wait_status(portal, ann, first, JobStatus.RUNNING)
    wait_status(portal, ben, other, JobStatus.RUNNING)
    assert status(portal, ann, second) is JobStatus.QUEUED
    assert place(portal, ann, second).blocker == (
        f"ann's jobs hold 2 of the 2 GPUs one person may use at once here (#{first}); this job needs 1")
    for job_id, who in ((first, ann), (second, ann), (other, ben)):
        portal.jobs.stop(who, job_id)
        run_to_end(portal, who, job_id)


def test_per_user_limit_lets_others_pass(monkeypatch, four_gpus, portal, workspace_script):
    monkeypatch.setattr(portal.settings, "local_max_jobs_per_user", 1)
    ann, ben = User("ann"), User("ben")
    s = workspace_script("loop.py", LOOP)
    first = submit(portal, ann, s, 1, "ann-1")
    second = submit(portal, ann, s, 1, "ann-2")
    other = submit(portal, ben, s, 1, "ben-1")
    wait_status(portal, ann, first, JobStatus.RUNNING)
    wait_status(portal, ben, other, JobStatus.RUNNING)  # ann's second job does not hold ben up
    assert status(portal, ann, second) is JobStatus.QUEUED
    assert place(portal, ann, second).blocker == (
        f"ann already runs 1 job (#{first}), the most one person may run at once here; it starts when one of "
        "them ends")
    portal.jobs.stop(ann, first)
    wait_status(portal, ann, second, JobStatus.RUNNING)
    for job_id, who in ((second, ann), (other, ben)):
        portal.jobs.stop(who, job_id)
        run_to_end(portal, who, job_id)


def test_estimated_start_contains_the_actual_start(four_gpus, portal, user):
    # The running job prints its epochs (so it has an ETA); the waiting one needs its GPUs.
    runner = submit(portal, user, "train_example.py", 4, "runner", epochs=8, extra_args="--seconds-per-epoch 0.75")
    waiter = submit(portal, user, "train_example.py", 4, "waiter", epochs=1, extra_args="--seconds-per-epoch 0")
    assert place(portal, user, waiter).estimate is None  # no ETA yet: unknown, not a guess

    def estimated():
        portal.sync.tick()
        return place(portal, user, waiter).estimate

    estimate = wait_until(estimated, timeout=20, interval=0.2)
    # Started, whether it is still running or (one epoch of nothing) already done by the time it is looked at.
    wait_until(lambda: status(portal, user, waiter) in (JobStatus.RUNNING, JobStatus.SUCCEEDED), timeout=30)
    started = portal.jobs.get(user, waiter).started_at
    assert estimate.earliest <= started <= estimate.latest, (estimate, started)
    assert (estimate.latest - estimate.earliest).total_seconds() < 10  # a range that says something
    run_to_end(portal, user, waiter)
    run_to_end(portal, user, runner)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_queue_survives_a_portal_restart(tmp_path):
    data = tmp_path / "portal-data"
    env = {"PORTAL_LOCAL_GPUS": "2"}
    srv = PortalServer(data, env=env).start()
    token = create_token(data, "alice")
    (data / "workspace" / "loop.py").write_text(LOOP)
    h = bearer(token)

    def post(name: str, **values) -> int:
        r = httpx.post(f"{srv.url}/api/v1/jobs", headers=h, json={"name": name, "script": "loop.py", **values})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(job_id: int) -> dict:
        return httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=h).json()

    try:
        first = post("first", gpus=2)
        wait_until(lambda: job(first)["status"] == "Running", timeout=20)
        second = post("second", gpus=1)
        third = post("third", gpus=2, priority="urgent")
        assert job(second)["status"] == "Queued"
        queued = job(third)["queue"]
        assert (queued["position"], queued["priority"]) == (1, "urgent")
        assert queued["blocker"] == f"2 of this machine's 2 GPUs are in use by #{first}; this job needs 2"
        srv.stop()

        srv = PortalServer(data, env=env).start()  # the first job ran on; the queue is the store's
        assert job(first)["status"] == "Running"
        assert [job(second)["queue"]["position"], job(third)["queue"]["position"]] == [2, 1]
        listing = httpx.get(f"{srv.url}/api/v1/queues", headers=h).json()["queues"]
        assert [(q["name"], q["quota_gpus"], q["used_gpus"]) for q in listing] == [("this machine", 2, 2)]
        assert [w["id"] for w in listing[0]["waiting"]] == [third, second]
        stopped_at = datetime.now(UTC)
        assert httpx.post(f"{srv.url}/api/v1/jobs/{first}/stop", headers=h, json={}).status_code == 202
        wait_until(lambda: job(third)["status"] == "Running", timeout=20)
        assert job(second)["status"] == "Queued"
        # Freed at once: the stop's grace (2 s here) plus a tick or two, not a later sweep.
        assert datetime.fromisoformat(job(third)["started_at"]) - stopped_at < timedelta(seconds=10)
        for j in (second, third):
            httpx.post(f"{srv.url}/api/v1/jobs/{j}/stop", headers=h, json={})
        wait_until(lambda: all(job(j)["finished"] for j in (first, second, third)), timeout=30)
    finally:
        srv.stop()


def test_queues_through_the_api_and_the_client_name_only_what_the_viewer_may_see(tmp_path):
    from ml_job_portal import JobClient

    data = tmp_path / "portal-data"
    srv = PortalServer(data, env={"PORTAL_LOCAL_GPUS": "1", "PORTAL_SHOW_OTHERS_JOBS": "false"}).start()
    try:
        (data / "workspace" / "loop.py").write_text(LOOP)
        alice = JobClient(cluster_url=srv.url, token=create_token(data, "alice"))
        bob = JobClient(cluster_url=srv.url, token=create_token(data, "bob"))
        running = alice.submit_job(name="alice-run", script="loop.py", gpus=1)
        wait_until(lambda: running.refresh().status == "Running", timeout=20)
        waiting = bob.submit_job(name="bob-secret", script="loop.py", gpus=1, priority="low")
        assert waiting.status == "Queued" and waiting.queue["position"] == 1
        assert waiting.queue["blocker"] == f"this machine's only GPU is in use by #{running.id}"
        (mine,) = bob.queues()
        assert [(w["id"], w["name"], w["priority"]) for w in mine["waiting"]] == [(waiting.id, "bob-secret", "low")]
        (theirs,) = alice.queues()
        assert (theirs["quota_gpus"], theirs["used_gpus"]) == (1, 1)
        assert theirs["running"][0]["name"] == "alice-run"
        hidden = theirs["waiting"][0]
        assert (hidden["id"], hidden["name"], hidden["owner"], hidden["blocker"]) == (waiting.id, None, None, None)
        assert hidden["position"] == 1 and "bob-secret" not in json.dumps(theirs)
        bad = httpx.post(f"{srv.url}/api/v1/jobs", headers=bearer(create_token(data, "carl")),
                         json={"name": "x", "script": "loop.py", "priority": "asap"})
        assert bad.status_code == 422 and bad.json()["problems"] == {"priority": "choose one of low, normal, urgent"}
        waiting.stop()
        running.stop()
        wait_until(lambda: waiting.refresh().finished and running.refresh().finished, timeout=30)
    finally:
        srv.stop()


def test_a_job_needing_more_gpus_than_the_machine_now_has_holds_up_nobody() -> None:
    """PORTAL_LOCAL_GPUS lowered from 4 to 2 across a restart: the 4-GPU job that waits can never start, and the
    1-GPU jobs behind it (anyone's) start on the free GPUs instead of waiting behind it for ever."""
    from services.queue_plan import Holder, Limits, Waiter, simulate, startable

    limits, holders = Limits(2), [Holder(1, "ada", 1, 10.0)]
    waiting = [Waiter(2, "ada", 4, 5.0), Waiter(3, "bob", 1, 5.0), Waiter(4, "cy", 1, 5.0)]
    assert [w.id for w in startable(limits, holders, waiting)] == [3]
    assert simulate(limits, holders, waiting) == {3: 0.0, 4: 5.0}
