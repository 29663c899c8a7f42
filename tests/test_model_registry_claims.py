"""A registration is uploaded once, also when leadership moves during the upload (real local jobs, a real SQLite
store, the real upload child against a real server that never answers): the worker of a replica that takes over
does not start a second upload of a claimed one; and a worker whose lease was lost and regained mid-tick keeps
working."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import psutil
import pytest

from services.model_registry import ModelRegistry
from services.registry_worker import RegistryWorker
from services.store.registry_tables import ModelRegistration
from services.worker_thread import PeriodicWorker
from tests.conftest import wait_until
from tests.test_model_registry import local_job

pytest.importorskip("mlflow", reason="mlflow-skinny (requirements.txt) is the portal's MLflow client")


def silent_server() -> tuple[socket.socket, list[socket.socket]]:
    """A server that takes connections and never answers: an upload to it lasts until it is killed."""
    sock = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, held


@pytest.mark.timeout(120)
def test_a_claimed_registration_is_not_uploaded_again_by_the_next_leader(portal, user, monkeypatch) -> None:
    sock, held = silent_server()
    monkeypatch.setattr(portal.settings, "mlflow_tracking_uri", f"http://127.0.0.1:{sock.getsockname()[1]}")
    job_id = local_job(portal, user, "claimed-demo")
    made = ModelRegistry(portal.jobs).register(user, job_id, ["model/weights.bin"], "claimed-model", None)
    old_leader, new_leader = RegistryWorker(portal.jobs), RegistryWorker(portal.jobs)
    first = threading.Thread(target=old_leader.run_due, daemon=True)
    first.start()
    try:
        wait_until(lambda: held, timeout=60)  # the old leader's upload has begun
        second: list[bool] = []
        other = threading.Thread(target=lambda: second.append(new_leader.run_due()), daemon=True)
        other.start()
        other.join(10)
        assert second == [False], "the next leader started a second upload of the same registration"
        with portal.jobs.session() as s:
            assert s.get_one(ModelRegistration, made.id).attempts == 1
    finally:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that has ended meanwhile
                if "services.registry_upload" in " ".join(child.cmdline()):
                    child.kill()
        first.join(30)
        sock.close()


def test_a_worker_whose_lease_is_lost_and_regained_mid_tick_keeps_ticking() -> None:
    class Slow(PeriodicWorker):
        def __init__(self) -> None:
            super().__init__(0.01)
            self.ticks = 0

        def tick(self) -> None:
            self.ticks += 1
            time.sleep(0.3)  # an upload in progress

    worker = Slow()
    worker.start()
    wait_until(lambda: worker.ticks >= 1)
    worker.stop(timeout=0)  # the lease lost: the thread is still in its tick
    worker.start()  # and regained before that tick ended
    try:
        ticks = worker.ticks
        assert wait_until(lambda: worker.ticks >= ticks + 2, timeout=5), "the worker stopped after its tick"
    finally:
        worker.stop()
