"""Issue 14 figure: many people watching one portal process at once.

Starts a real portal (``streamlit run portal_app.py``) with a history of finished jobs and one running job whose
log gains a ``tick <unix time>`` line twice a second. Then it opens N sessions the way a browser does, over
Streamlit's own websocket protocol (``/_stcore/stream``, protobuf BackMsg/ForwardMsg): most on the running job's
Logs tab, the rest on the dashboard and on History. Each session keeps the page's live parts running as the
browser would (a rerun of each fragment every ``run_every``, whether or not the last one came back), and a few
real Chromium tabs on the job page check that what they draw keeps changing. After the measured window the job
ends, and every session times how long its screen takes to show the change.

Printed per N: portal CPU (% of one core) and RSS per session; fragment reruns answered of those asked and their
p50/p95 latency; how old the newest log line on screen is (p50/p95, from the job's own clock); the status change on
screen after the job's last line (p95: target 3 s); the Chromium tabs' log updates.

    .venv/bin/python bench/many_viewers.py [--sessions 10,50] [--window 40] [--browsers 2] [--gc-after-runs]
                                           [--profile PREFIX]

``--gc-after-runs`` starts the portal with Streamlit's default ``runner.postScriptGC = true`` (a full garbage
collection after every script and fragment run), for comparison with the portal's setting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from _common import percentile, start_portal

from services.models import StatusGroup

JOB_SCRIPT = '''
import os, sys, time
stop, began = sys.argv[-1], time.time()  # the portal puts its own flags first
step = 0
while not os.path.exists(stop) and time.time() - began < 900:
    step += 1
    if step % 10 == 1:
        print(f"Epoch {step // 10 + 1}/1000", flush=True)
    print(f"tick {time.time():.3f} step={step} loss={1 / step:.5f}", flush=True)
    time.sleep(0.5)
print(f"done {time.time():.3f}", flush=True)
'''
TICK = re.compile(r"tick (\d+\.\d+)")
OWNER_HISTORY = "team"


@dataclass
class Session:
    """What one viewer saw."""

    page: str
    asked: int = 0
    answered: int = 0
    cut: int = 0  # fragment runs stopped early for the next request
    gaps: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # each gap less its fragment's run_every: 0 is on schedule
    log_ages: list[float] = field(default_factory=list)
    first_render: float | None = None
    saw_end: float | None = None
    errors: list[str] = field(default_factory=list)


def seed(data_dir: Path, history: int, database_url: str | None = None) -> str:
    """A history of finished jobs by another owner, the live job's script, and an API token of the local user."""
    from services.auth import local_user
    from services.config import Settings
    from services.portal import build_portal
    from services.store.seed import seed_jobs

    settings = Settings(data_dir=data_dir, backend="local", **({"database_url": database_url} if database_url else {}))
    portal = build_portal(settings)
    try:
        seed_jobs(portal.jobs.sessions.kw["bind"], history, owner=OWNER_HISTORY)
        (settings.workspace_dir / "live_ticks.py").write_text(JOB_SCRIPT)
        return portal.tokens.create(local_user(settings), "bench")[1]
    finally:
        portal.close()


def start_server(data_dir: Path, port: int, gc_after_runs: bool) -> subprocess.Popen[bytes]:
    return start_portal(data_dir, port, extra=("--runner.postScriptGC", "true") if gc_after_runs else ())


def texts_of(delta) -> str:  # a protobuf Delta
    """The words a delta puts on screen (code, metrics, headings, markdown), enough to spot ticks and statuses."""
    if delta.WhichOneof("type") != "new_element":
        return ""
    el = delta.new_element
    kind = el.WhichOneof("type")
    if kind == "code":
        return el.code.code_text
    if kind == "metric":
        return f"{el.metric.label}: {el.metric.body}"
    if kind in ("heading", "markdown"):
        return getattr(el, kind).body
    return ""


async def watch(port: int, page: str, query: str, s: Session, stop_at: list[float], end_marker: str,
                job_end: list[float]) -> None:
    """One browser session: the first run, then every fragment's timer, until stop_at[0] (and the job's end)."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    timers: dict[str, asyncio.Task[None]] = {}
    running: list[str] = []  # the fragments of the run in progress
    drawn = 0  # elements that run has sent
    last_done: dict[str, float] = {}
    intervals: dict[str, float] = {}  # each fragment's run_every
    page_hash = ""
    t_open = time.monotonic()
    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  origin=f"http://127.0.0.1:{port}", max_size=None, open_timeout=60) as ws:

        async def rerun(fragment_id: str = "") -> None:
            msg = BackMsg()
            msg.rerun_script.query_string = query
            msg.rerun_script.page_name = "" if page == "dashboard" else page  # the default page's URL is "/"
            msg.rerun_script.page_script_hash = page_hash
            if fragment_id:
                msg.rerun_script.fragment_id = fragment_id
                msg.rerun_script.is_auto_rerun = True
            await ws.send(msg.SerializeToString())

        async def every(interval: float, fragment_id: str) -> None:
            while True:  # as the browser's setInterval: on time, whether or not the last rerun came back
                await asyncio.sleep(interval)
                s.asked += 1
                await rerun(fragment_id)

        await rerun()
        try:
            while True:
                if time.monotonic() > stop_at[0] and (s.saw_end is not None or time.monotonic() > stop_at[0] + 15):
                    break
                try:
                    data = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now, wall = time.monotonic(), time.time()
                msg = ForwardMsg()
                msg.ParseFromString(data)
                kind = msg.WhichOneof("type")
                if kind == "navigation":  # the page's own hash (new_session's is the entry script's)
                    page_hash = msg.navigation.page_script_hash
                elif kind == "new_session":
                    running, drawn = list(msg.metadata.run.fragment_ids), 0
                    if not running:  # a full run: the browser drops the old timers
                        for t in timers.values():
                            t.cancel()
                        timers.clear()
                elif kind == "auto_rerun" and msg.auto_rerun.fragment_id not in timers:
                    intervals[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
                    timers[msg.auto_rerun.fragment_id] = asyncio.create_task(
                        every(msg.auto_rerun.interval, msg.auto_rerun.fragment_id))
                elif kind == "script_finished":
                    if s.first_render is None and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                        s.first_render = now - t_open
                    # A run cut short because the next timer's request arrived still drew what it sent before.
                    elif s.first_render is not None and running and drawn:
                        s.cut += msg.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN
                        s.answered += len(running)  # one run may answer several fragments' timers
                        for fid in running:  # how long the screen went without this part changing
                            if fid in last_done:
                                s.gaps.append(now - last_done[fid])
                                s.late.append(now - last_done[fid] - intervals.get(fid, 0.0))
                            last_done[fid] = now
                elif kind == "delta":
                    drawn += 1
                    text = texts_of(msg.delta)
                    ticks = TICK.findall(text)
                    if ticks and job_end[0] == 0:
                        s.log_ages.append(wall - float(ticks[-1]))
                    if s.saw_end is None and end_marker and end_marker in text:
                        # Drawn before the end's instant was taken (it is taken by polling): at once.
                        s.saw_end = max(0.0, wall - job_end[0]) if job_end[0] else 0.0
        finally:  # also when the portal went away (a killed replica): no timer writes to a closed socket
            for t in timers.values():
                t.cancel()


async def browser_tabs(port: int, job_id: int, n: int, until: list[float]) -> list[list[float]]:
    """Real Chromium tabs on the job's Logs tab: the newest tick each one shows, read every second."""
    if n == 0 or not Path("/usr/bin/chromium").exists():
        return []
    from playwright.async_api import async_playwright

    seen: list[list[float]] = [[] for _ in range(n)]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pages = []
        for _ in range(n):
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/job?id={job_id}", timeout=60_000)
            pages.append(page)
        while time.monotonic() < until[0]:
            for i, page in enumerate(pages):
                text = " ".join(await page.locator("[data-testid='stCode']").all_inner_texts())
                ticks = TICK.findall(text)
                if ticks:
                    seen[i].append(time.time() - float(ticks[-1]))
            await asyncio.sleep(1)
        await browser.close()
    return seen


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def job_status(port: int, token: str, job_id: int) -> str:
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    return r.json()["status"]


def session_plan(n: int, job_id: int, job_marker: str, dashboard_marker: str) -> list[tuple[str, str, str]]:
    """(page, query, what its screen shows once the job ended) per session: 60 % on the live job's page, 25 % on
    the dashboard, the rest on History."""
    n_job = max(1, round(n * 0.6))
    n_dash = max(0, round(n * 0.25)) if n > 1 else 0
    return ([("job", f"id={job_id}", job_marker)] * n_job + [("dashboard", "", dashboard_marker)] * n_dash
            + [("history", "", "")] * (n - n_job - n_dash))


def run(n: int, window: float, browsers: int, history: int, gc_after_runs: bool,
        profile: tuple[str, str] | None) -> None:
    from tests.conftest import free_port, wait_until

    data_dir = Path(tempfile.mkdtemp(prefix="portal-viewers-"))
    stop_file = data_dir / "stop-the-job"
    token = seed(data_dir, history)
    port = free_port()
    server = start_server(data_dir, port, gc_after_runs)
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "live-ticks", "script": "live_ticks.py", "extra_args": str(stop_file)})
        job_id = r.json()["id"]
        wait_until(lambda: job_status(port, token, job_id) == "Running", timeout=60, interval=0.3)
        proc = psutil.Process(server.pid)
        time.sleep(3)
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        time.sleep(10)
        idle_cpu = (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        rss_before = proc.memory_info().rss
        plan = session_plan(n, job_id, "Status: ✅ Succeeded", f"{StatusGroup.SUCCEEDED.value} (1)")
        sessions = [Session(page) for page, _, _ in plan]
        stop_at = [float("inf")]
        job_end = [0.0]
        tabs_until = [float("inf")]

        async def main() -> list[list[float]]:
            tasks = []
            for (page, query, marker), s in zip(plan, sessions, strict=True):
                tasks.append(asyncio.create_task(watch(port, page, query, s, stop_at, marker, job_end)))
                await asyncio.sleep(0.1)  # people do not all press Enter in the same millisecond
            tabs = asyncio.create_task(browser_tabs(port, job_id, browsers, tabs_until))
            await asyncio.sleep(8)  # warm-up: every session rendered once and its timers running
            for s in sessions:
                s.asked, s.answered, s.cut, s.gaps, s.late, s.log_ages = 0, 0, 0, [], [], []
            cpu0, t0 = cpu_seconds(proc), time.monotonic()
            rss_loaded = proc.memory_info().rss
            spy = (subprocess.Popen([profile[0], "record", "-p", str(server.pid), "-d", str(int(window)), "-f", "raw",
                                     "-o", profile[1], "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   if profile else None)
            await asyncio.sleep(window)
            if spy:
                spy.wait()
            cpu = (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
            tabs_until[0] = time.monotonic()
            stats["cpu"], stats["rss_loaded"] = cpu, rss_loaded
            stop_file.touch()
            while not job_end[0]:
                log = (data_dir / "jobs" / str(job_id) / "job.log").read_text()
                done = re.search(r"done (\d+\.\d+)", log)
                if done:
                    job_end[0] = float(done.group(1))
                await asyncio.sleep(0.05)
            stop_at[0] = time.monotonic()
            wait_until(lambda: job_status(port, token, job_id) != "Running", timeout=30, interval=0.1)
            print(f"the job ended: {job_status(port, token, job_id)}, "
                  f"{time.time() - job_end[0]:.2f} s after its last line")
            for s, result in zip(sessions, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
                if isinstance(result, BaseException):
                    s.errors.append(repr(result))
            return await tabs

        stats: dict[str, float] = {}
        tab_ages = asyncio.run(main())
        stats["idle_cpu"] = idle_cpu
        report(n, sessions, stats, rss_before, tab_ages, window)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def report(n: int, sessions: list[Session], stats: dict[str, float], rss_before: int, tab_ages: list[list[float]],
           window: float) -> None:
    asked = sum(s.asked for s in sessions)
    answered = sum(s.answered for s in sessions)
    gaps = [x for s in sessions for x in s.gaps]
    ages = [x for s in sessions for x in s.log_ages]
    ends = [s.saw_end for s in sessions if s.page != "history"]
    seen = [e for e in ends if e is not None]
    first = [s.first_render for s in sessions if s.first_render is not None]
    per_session_mb = (stats["rss_loaded"] - rss_before) / n / 2**20
    pages = {p: sum(1 for s in sessions if s.page == p) for p in ("job", "dashboard", "history")}
    errors = [e for s in sessions for e in s.errors]
    print(f"\n== {n} sessions ({pages['job']} job page, {pages['dashboard']} dashboard, {pages['history']} History), "
          f"{window:.0f} s window")
    print(f"portal CPU {stats['cpu'] * 100:5.1f} % of one core, {stats['idle_cpu'] * 100:.1f} % with nobody watching "
          f"({(stats['cpu'] - stats['idle_cpu']) * 100 / n:.2f} % per session); "
          f"RSS {stats['rss_loaded'] / 2**20:.0f} MB ({per_session_mb:.1f} MB per session)")
    if first:
        print(f"first render: p50 {percentile(first, 50):.2f} s, p95 {percentile(first, 95):.2f} s")
    if asked:
        cut = sum(s.cut for s in sessions)
        print(f"fragment reruns answered: {answered} of {asked} asked ({answered / asked:.0%}; {cut} cut short by the "
              "next request after drawing)"
              + (f"; a live part changes every p50 {percentile(gaps, 50):.2f} s, p95 {percentile(gaps, 95):.2f} s, "
                 f"max {max(gaps):.2f} s (asked every 2 s)" if gaps else ""))
    for page in ("job", "dashboard"):
        part = [x for s in sessions if s.page == page for x in s.gaps]
        if part:
            print(f"  {page}: p50 {percentile(part, 50):.2f} s, p95 {percentile(part, 95):.2f} s, "
                  f"max {max(part):.2f} s between changes")
    if ages:
        print(f"newest log line on screen is p50 {percentile(ages, 50):.2f} s, p95 {percentile(ages, 95):.2f} s old "
              f"({len(ages)} updates)")
    if ends:
        print(f"status change on screen: {len(seen)} of {len(ends)} live sessions"
              + (f", p50 {percentile(seen, 50):.2f} s, p95 {percentile(seen, 95):.2f} s after the job's last line"
                 if seen else ""))
    if os.environ.get("VB_DEBUG"):
        for i, s in enumerate(sessions):
            print(f"  session {i} {s.page}: asked {s.asked} answered {s.answered} gaps {len(s.gaps)} "
                  f"max {max(s.gaps, default=0):.1f} first {s.first_render} end {s.saw_end}")
    if errors:
        print(f"{len(errors)} sessions failed, e.g. {errors[0]}")
    for i, t in enumerate(tab_ages):
        if t:
            print(f"chromium tab {i + 1}: {len(t)} reads, newest log line p50 {percentile(t, 50):.2f} s, "
                  f"max {max(t):.2f} s old")
        else:
            print(f"chromium tab {i + 1}: never showed a log line")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="10,50", help="comma-separated numbers of sessions, one portal each")
    ap.add_argument("--window", type=float, default=40, help="seconds measured, after an 8 s warm-up")
    ap.add_argument("--browsers", type=int, default=2, help="real Chromium tabs on the job page (in addition)")
    ap.add_argument("--history", type=int, default=5000, help="finished jobs in the store")
    ap.add_argument("--gc-after-runs", action="store_true", help="Streamlit's default: gc.collect() after each run")
    ap.add_argument("--profile", metavar="PREFIX", help="record the portal with py-spy (on PATH) into PREFIX-N.txt, "
                    "folded stacks")
    args = ap.parse_args()
    print(f"{psutil.cpu_count()} CPU cores; portal started with runner.postScriptGC "
          f"{'true (Streamlit default)' if args.gc_after_runs else 'as the portal sets it'}")
    for n in (int(x) for x in args.sessions.split(",")):
        profile = (shutil.which("py-spy") or "py-spy", f"{args.profile}-{n}.txt") if args.profile else None
        run(n, args.window, args.browsers, args.history, args.gc_after_runs, profile)


if __name__ == "__main__":
    main()
