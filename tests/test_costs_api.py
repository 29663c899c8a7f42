"""A job's `cost` and `gpu_hours` in the API's job JSON and the client's Job, from a real portal process with real
local runs: live while it runs, final and equal to its run seconds × GPUs × the price once it ended."""

from __future__ import annotations

from ml_job_portal import JobClient

from tests.conftest import PortalServer, create_token, wait_until
from tests.test_costs import SLEEP


def test_the_job_json_and_the_client_carry_cost_live_while_running_and_final_at_the_end(tmp_path):
    data = tmp_path / "portal-data"
    # $1 a GPU-second, nothing per node: the cost is the GPU-seconds it ran.
    env = {"PORTAL_LOCAL_GPUS": "2", "PORTAL_GPU_PRICE_PER_HOUR": "3600", "PORTAL_NODE_PRICE_PER_HOUR": "0"}
    srv = PortalServer(data, env=env).start()
    try:
        client = JobClient(cluster_url=srv.url, token=create_token(data, "alice"))
        (data / "workspace" / "sleep.py").write_text(SLEEP)
        job = client.submit_job(name="priced", script="sleep.py", gpus=2, extra_args="--seconds 8")
        assert job.cost in (None, 0.0) and "gpu_hours" in job.data  # just submitted: nothing yet

        def live():
            j = client.get_job(job.id)
            return j if j.status == "Running" and (j.cost or 0) > 2 else None

        running = wait_until(live, timeout=30, interval=0.5)  # accrued while it runs, at 2 GPUs × seconds so far
        assert running.gpu_hours and running.cost < 16
        done = wait_until(lambda: (j := client.get_job(job.id)).finished and j, timeout=60, interval=0.5)
        assert done.status == "Succeeded"
        ran = (done.finished_at - done.started_at).total_seconds()
        assert abs(done.gpu_hours * 3600 - 2 * ran) < 1.0
        assert abs(done.cost - 2 * ran) < 1.0 and done.cost > running.cost
        assert client.get_job(job.id).cost == done.cost  # final
    finally:
        srv.stop()
