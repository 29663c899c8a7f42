"""Issue 17 figure: the Kubernetes API's load from one portal process while 50 jobs wait in a Kueue queue, with 1
and then 30 people looking, to show that the reads of Kueue's visibility API do not grow with viewers.

A real portal (`streamlit run portal_app.py`, Kubernetes backend) on the qbench test control plane with a real
Kueue (bench/_kueue.py); a ClusterQueue of 8 GPUs held by 8 running jobs, and 50 more jobs waiting behind them.
Then N sessions open the way a browser does, over Streamlit's websocket protocol (bench/many_viewers.py's
`watch`, which keeps each page's live parts rerunning on their timers): by default two in three on the
Dashboard (each waiting card says its place, blocker and estimated start), one in three on the Queues page.
Each N is measured over a window: the kube-apiserver's own counters (apiserver_request_total from its /metrics)
by verb and resource, and Kueue's visibility server's own counters (the portal reaches it directly, as on KWOK)
for the pendingworkloads reads. Printed per N, requests per minute, and the ratio of 30 sessions to 1.

    .venv/bin/python bench/queue_api_load.py [--sessions 1,30] [--window 90] [--waiting 50] [--pages dashboard,queues]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from _kueue import QueueEnv, kueue_queue, request_counts, start_cluster
from many_viewers import Session, watch

from services.models import Role, User
from services.portal import build_portal
from tests.conftest import PortalServer, wait_until
from tests.k8s.conftest import k8s_settings

ME = User(name="researcher", role=Role.ADMIN)
VISIBILITY = ("GET", "localqueues/pendingworkloads")
# What the portal reads and writes (the rest is the control plane's own controllers, KWOK and Kueue).
PORTAL_KINDS = {"jobs", "pods", "pods/log", "workloads", "localqueues", "clusterqueues", "workloadpriorityclasses"}


def counts(env: QueueEnv) -> tuple[dict[tuple[str, str], float], float]:
    """(the kube-apiserver's requests by verb and resource, Kueue's visibility server's pendingworkloads reads)."""
    api = request_counts(env.cluster.kubectl("get", "--raw", "/metrics"))
    vis = request_counts(env.kueue_get("/metrics"))
    return api, vis.get(VISIBILITY, 0.0)


async def viewers(port: int, n: int, pages: list[str], warmup: float, window: float,
                  measure) -> tuple[list[Session], object]:
    """n sessions open, warmed up, then `measure()` before and after the window; the sessions' own records."""
    stop_at = [float("inf")]
    sessions = [Session(pages[i % len(pages)]) for i in range(n)]
    tasks = []
    for s in sessions:
        tasks.append(asyncio.create_task(watch(port, s.page, "", s, stop_at, "\0", [0.0])))
        await asyncio.sleep(0.1)  # people do not all press Enter in the same millisecond
    deadline = time.monotonic() + 180  # every session drawn once (30 first renders share the portal's cores)
    while time.monotonic() < deadline and any(s.first_render is None for s in sessions):
        await asyncio.sleep(0.5)
    await asyncio.sleep(warmup)
    for s in sessions:
        s.asked, s.answered = 0, 0
    before = await asyncio.to_thread(measure)
    t0 = time.monotonic()
    await asyncio.sleep(window)
    after = await asyncio.to_thread(measure)
    elapsed = time.monotonic() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sessions, (before, after, elapsed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,30")
    ap.add_argument("--window", type=float, default=90, help="seconds measured per N, after a 20 s warm-up")
    ap.add_argument("--waiting", type=int, default=50)
    ap.add_argument("--pages", default="dashboard,dashboard,queues", help="the pages sessions open, in turn")
    args = ap.parse_args()
    cluster = start_cluster()
    with kueue_queue(cluster, 8) as env:
        data = Path(tempfile.mkdtemp(prefix="qbench-load-")) / "portal-data"
        settings = k8s_settings(cluster, env.namespace, data, kueue_default_queue=env.queue,
                                kueue_visibility_url=env.visibility_url,
                                pod_annotations={"kwok.test/outcome": "hang"})
        # The jobs are submitted before the server starts, by the same store: only the server reads afterwards.
        submitter = build_portal(settings)
        holders = [submitter.jobs.submit(ME, {"name": f"hold-{i}", "script": "train_example.py", "gpus": 1})
                   for i in range(8)]
        waiting = [submitter.jobs.submit(ME, {"name": f"wait-{i}", "script": "train_example.py", "gpus": 1})
                   for i in range(args.waiting)]
        submitter.close()
        path = (f"/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{env.namespace}/localqueues/{env.queue}"
                "/pendingworkloads")
        wait_until(lambda: len(json.loads(env.kueue_get(path))["items"]) >= len(waiting), timeout=120, interval=1)
        env_vars = {"PORTAL_BACKEND": "kubernetes", "PORTAL_KUBECONFIG": str(cluster.kubeconfig),
                    "PORTAL_NAMESPACE": env.namespace, "PORTAL_KUEUE_DEFAULT_QUEUE": env.queue,
                    "PORTAL_KUEUE_VISIBILITY_URL": env.visibility_url,
                    "PORTAL_POD_ANNOTATIONS": json.dumps({"kwok.test/outcome": "hang"})}
        server = PortalServer(data, env=env_vars).start()
        try:
            pending = json.loads(env.kueue_get(path))
            print(f"{len(holders)} jobs hold the queue's 8 GPUs; {len(pending['items'])} wait in Kueue "
                  f"(of {len(waiting)} submitted); portal pid {server.proc.pid if server.proc else '?'}")
            pages = args.pages.split(",")
            rates: dict[int, tuple[dict[tuple[str, str], float], float]] = {}
            for n in (int(x) for x in args.sessions.split(",")):
                sessions, (before, after, elapsed) = asyncio.run(
                    viewers(server.port, n, pages, 20, args.window, lambda: counts(env)))
                api = {k: (after[0].get(k, 0) - before[0].get(k, 0)) * 60 / elapsed for k in after[0]}
                api[("GET", "/metrics")] = api.get(("GET", "/metrics"), 0) - 60 / elapsed  # our own read
                api = {k: v for k, v in api.items() if v > 0.05}
                vis = (after[1] - before[1] - 1) * 60 / elapsed  # -1: our own read of the pending list
                rates[n] = (api, vis)
                mix = {p: sum(1 for s in sessions if s.page == p) for p in dict.fromkeys(pages)}
                answered = sum(s.answered for s in sessions)
                asked = sum(s.asked for s in sessions)
                firsts = sorted(s.first_render for s in sessions if s.first_render is not None)
                print(f"\n== {n} sessions ({', '.join(f'{v} {k}' for k, v in mix.items())}), {elapsed:.0f} s: "
                      f"fragment reruns answered {answered}/{asked}; drawn {len(firsts)}/{n}"
                      + (f", first render p50 {firsts[len(firsts) // 2]:.1f} s, max {firsts[-1]:.1f} s"
                         if firsts else ""))
                ours = sum(v for (_, res), v in api.items() if res in PORTAL_KINDS)
                print(f"kube-apiserver requests/min, all clients: {sum(api.values()):.1f}; of the kinds the portal "
                      f"uses ({', '.join(sorted(PORTAL_KINDS))}): {ours:.1f}")
                for (verb, res), v in sorted(api.items(), key=lambda kv: -kv[1]):
                    print(f"  {verb:>6} {res:<40} {v:6.1f}")
                print(f"Kueue visibility API (pendingworkloads) reads/min: {vis:.1f}")
            ns = sorted(rates)
            if len(ns) >= 2:
                (lo, lo_vis), (hi, hi_vis) = rates[ns[0]], rates[ns[-1]]
                lo_all, hi_all = sum(lo.values()), sum(hi.values())
                lo_ours, hi_ours = (sum(v for (_, res), v in d.items() if res in PORTAL_KINDS) for d in (lo, hi))
                print(f"\n{ns[-1]} sessions against {ns[0]}: kube-apiserver {hi_all:.1f} vs {lo_all:.1f}/min "
                      f"(ratio {hi_all / max(1e-9, lo_all):.2f}), the portal's kinds {hi_ours:.1f} vs {lo_ours:.1f} "
                      f"(ratio {hi_ours / max(1e-9, lo_ours):.2f})"
                      f"; visibility reads {hi_vis:.1f} vs {lo_vis:.1f}/min (ratio {hi_vis / max(1e-9, lo_vis):.2f})")
        finally:
            server.stop()
            cluster.kubectl("-n", env.namespace, "delete", "jobs", "--all", "--wait=false", check=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
