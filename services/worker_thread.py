"""A worker of the sync loop (``SyncLoop.workers``): a daemon thread that calls ``tick()`` every few seconds between
``start()`` and ``stop()``; the loop starts it where it leads and stops it when it no longer does."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class PeriodicWorker:
    thread_name = "portal-worker"

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()  # also for a thread still alive: a lease lost and regained mid-tick keeps it running
        if self._thread and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the database away, say: tried again next time
                log.exception("%s: a pass failed", self.thread_name)

    def tick(self) -> object:
        raise NotImplementedError
