"""Leader failover of two portal replicas, against the test control plane (testenv/start.sh) and a throwaway
PostgreSQL (tests/pg_env.py): the time from the leader's SIGKILL to the other replica applying a cluster change
(a job's completion recorded in the store), and to its /healthz saying it leads, p50 and max over N repeats.

Each repeat: a job is running (it completes 3 s later in the cluster), the leader is SIGKILLed, the clock runs until
the follower's API shows the job Succeeded; the killed replica is started again as the new follower.

    .venv/bin/python bench/leader_failover.py          (BENCH_REPEATS=5, PORTAL_LEADER_LEASE_SECONDS=15 by default)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))
from tests.conftest import wait_until
from tests.k8s.test_replicas import Replica, leads, replica_env, token_for
from tests.pg_env import start_server

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
LEASE = os.environ.get("PORTAL_LEADER_LEASE_SECONDS", "15")
CLUSTER = os.environ.get("PORTAL_TESTENV_CLUSTER", "portal-it")


class _Cluster:  # what replica_env reads of the test fixture's cluster
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig


def status(replica: Replica, job_id: int) -> str:
    return next(j for j in replica.jobs() if j["id"] == job_id)["status"]


def main() -> None:
    kubeconfig = subprocess.run([str(ROOT / "testenv" / "start.sh"), CLUSTER], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1]
    pg = start_server()
    url = pg.url(pg.create_database())
    data = Path(tempfile.mkdtemp(prefix="portal-failover-bench-")) / "portal-data"
    # The default namespace serves a recorded log for every pod (testenv/start.sh); a prefix of this run's own
    # keeps its Job names apart from any earlier run's.
    env = replica_env(_Cluster(kubeconfig), "default", url) | {
        "PORTAL_LEADER_LEASE_SECONDS": LEASE, "PORTAL_JOB_NAME_PREFIX": f"lf{uuid.uuid4().hex[:6]}",
        "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/runtime": "3s"})}
    token = token_for(data, url, "bench")
    leader = Replica("portal-0", data, env, token).start()
    wait_until(lambda: leads(leader), timeout=30, interval=0.2)
    follower = Replica("portal-1", data, env, token).start()
    applied: list[float] = []
    took_over: list[float] = []
    try:
        for i in range(REPEATS):
            job = leader.submit(f"failover-{i}")
            wait_until(lambda j=job, f=follower: status(f, j) == "Running", timeout=60, interval=0.1)
            leader.kill()
            killed = time.monotonic()
            leading = None
            while True:
                now = time.monotonic()
                if leading is None and leads(follower):
                    leading = now - killed
                if status(follower, job) == "Succeeded":
                    applied.append(now - killed)
                    took_over.append(leading if leading is not None else now - killed)
                    break
                if now - killed > 120:
                    raise SystemExit(f"repeat {i}: the follower did not record the job's completion in 120 s")
                time.sleep(0.1)
            print(f"  repeat {i + 1}: leads after {took_over[-1]:5.1f} s, completion recorded after "
                  f"{applied[-1]:5.1f} s")
            leader.stop()
            leader, follower = follower, Replica(f"portal-{i + 2}", data, env, token).start()
        print(f"leader failover, lease {LEASE} s (renewed every {float(LEASE) / 3:g} s), n={REPEATS}:")
        print(f"  SIGKILL -> the other replica leads (/healthz): p50 {statistics.median(took_over):.1f} s, "
              f"max {max(took_over):.1f} s")
        print(f"  SIGKILL -> a cluster change applied (a job's completion recorded): "
              f"p50 {statistics.median(applied):.1f} s, max {max(applied):.1f} s "
              f"({statistics.median(applied) / float(LEASE):.2f} of the lease)")
    finally:
        leader.stop()
        follower.stop()
        pg.stop()


if __name__ == "__main__":
    main()
