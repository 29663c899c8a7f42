"""Stop pressed while the local queue starts the job (real threads, real runner processes, real SQLite). The two
interleavings that used to lose the stop are made to happen every time: a listener on the store's sessions holds
one side at the moment that matters while the other goes on. Nothing of the queue or of Stop is replaced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psutil
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from services import local_queue
from services.models import JobStatus
from services.store.orm import Job
from tests.conftest import run_to_end, wait_until

LOOP = "import time\nfor i in range(600):\n    print(f'Epoch {i+1}/600', flush=True)\n    time.sleep(0.1)\n"
HOLD_SECONDS = 2.0  # how long one side is held; the fixed code makes the other side wait this out, once


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_LOCAL_GPUS", "4")


@pytest.fixture
def on_flush(portal) -> Iterator[Callable[[Callable[[Session], None]], None]]:
    """Run a function before each flush of the portal's sessions (the moment a session writes)."""
    added: list[Callable[[Session, object, object], None]] = []

    def add(fn: Callable[[Session], None]) -> None:
        def listener(session: Session, _ctx: object, _instances: object) -> None:
            fn(session)

        event.listen(portal.jobs.sessions, "before_flush", listener)
        added.append(listener)

    yield add
    for listener in added:
        event.remove(portal.jobs.sessions, "before_flush", listener)


def dirty_ref(session: Session, job_id: int) -> dict | None:
    """The handle this flush is about to write for the job, if it writes one."""
    for obj in session.dirty:
        if isinstance(obj, Job) and obj.id == job_id:
            return dict(obj.backend_ref or {})
    return None


def runners_of(portal, job_id: int) -> list[psutil.Process]:
    folder = str(portal.jobs.backend.job_dir(job_id))
    return [p for p in psutil.process_iter(["cmdline"])
            if (cmd := p.info["cmdline"] or []) and "local_runner.py" in " ".join(cmd) and folder in cmd]


def test_stop_between_the_start_reading_the_job_and_recording_its_runner_is_not_lost(four_gpus, portal, user,
                                                                                     workspace_script, on_flush):
    """Before: Stop marked the still-waiting job and signalled nothing (there was no runner yet), then the start
    wrote the runner's handle over the mark: the job ran on to its end although Stop had been pressed."""
    script = workspace_script("loop.py", LOOP)
    with portal.jobs.session() as s:  # the next job's id, for the listener before submit returns it
        job_id = (s.query(Job.id).order_by(Job.id.desc()).limit(1).scalar() or 0) + 1
    threads: list[threading.Thread] = []

    def stop_meanwhile(session: Session) -> None:
        ref = dirty_ref(session, job_id)
        if ref and ref.get("runner_pid") and not threads:  # the start, about to record its runner
            t = threading.Thread(target=portal.jobs.stop, args=(user, job_id))
            threads.append(t)
            t.start()
            t.join(HOLD_SECONDS)  # before the fix it is done by now; after it, it waits for this start to end

    on_flush(stop_meanwhile)
    assert portal.jobs.submit(user, {"name": "stopped-while-starting", "script": script, "gpus": 1}) == job_id
    assert threads, "the start was not seen"
    threads[0].join(30)
    job = run_to_end(portal, user, job_id, timeout=30)  # the loop would run a minute
    assert job.status is JobStatus.STOPPED
    wait_until(lambda: not runners_of(portal, job_id), timeout=10)


def test_stop_reading_the_job_before_it_starts_and_writing_after_leaves_no_runner_behind(
        four_gpus, portal, user, workspace_script, on_flush, monkeypatch):
    """Before: Stop read the waiting job, the queue started it meanwhile, and Stop wrote back the old "waiting"
    handle marked stopped: the job said Stopped (its GPU free for the next) while its process trained on."""
    script = workspace_script("loop.py", LOOP)
    monkeypatch.setattr(portal.settings, "local_max_jobs_per_user", 1)
    holder = portal.jobs.submit(user, {"name": "holder", "script": script, "gpus": 1})
    waiting = portal.jobs.submit(user, {"name": "waits", "script": script, "gpus": 1})
    wait_until(lambda: (portal.sync.tick(), portal.jobs.get(user, holder).status)[1] is JobStatus.RUNNING)
    assert portal.jobs.get(user, waiting).status is JobStatus.QUEUED
    read, started = threading.Event(), threading.Event()

    def hold_the_stop(session: Session) -> None:
        ref = dirty_ref(session, waiting)
        if ref and ref.get("stop_requested"):
            read.set()  # Stop has read the job and is about to write
            started.wait(HOLD_SECONDS)

    on_flush(hold_the_stop)
    stopper = threading.Thread(target=portal.jobs.stop, args=(user, waiting))
    stopper.start()
    assert read.wait(10)
    monkeypatch.setattr(portal.settings, "local_max_jobs_per_user", 0)  # the waiting job may start now
    local_queue.admit(portal.jobs)  # as the sync loop's next tick would
    started.set()
    stopper.join(30)
    job = run_to_end(portal, user, waiting, timeout=30)
    assert job.status is JobStatus.STOPPED
    wait_until(lambda: not runners_of(portal, waiting), timeout=10)  # nothing of it runs on
    portal.jobs.stop(user, holder)
    run_to_end(portal, user, holder)
