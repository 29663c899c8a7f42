"""Helpers for the benchmark scripts: a throwaway portal, AppTest timing, percentiles."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APP = str(ROOT / "portal_app.py")


def fresh_portal():
    os.environ["PORTAL_DATA_DIR"] = tempfile.mkdtemp(prefix="portal-bench-")
    from services.portal import get_portal, reset_portal

    reset_portal()
    return get_portal()


def start_portal(data_dir: Path, port: int, *, head: list[str] | None = None,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """The portal as `streamlit run portal_app.py` starts it (`head` replaces `python -m streamlit`), on 127.0.0.1,
    on a throwaway data folder with local jobs; returns once /healthz answers."""
    import httpx

    from tests.conftest import wait_until

    env = dict(os.environ, PORTAL_DATA_DIR=str(data_dir), PORTAL_BACKEND="local")
    proc = subprocess.Popen(
        [*(head or [sys.executable, "-m", "streamlit"]), "run", "portal_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false", *extra],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert proc.poll() is None, "the portal did not start"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=90, interval=0.3)
    return proc


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def time_runs(run, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(ms: list[float]) -> str:
    return (f"p50 {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
            f"max {max(ms):7.1f} ms   (n={len(ms)})")


class ScriptTimer:
    """Times only the script run inside Streamlit's ScriptRunner (what a server spends per rerun),
    leaving out AppTest's own work of parsing the result into its element tree."""

    def __init__(self) -> None:
        from streamlit.runtime.scriptrunner import script_runner

        self.times: list[float] = []
        self._cls = script_runner.ScriptRunner
        self._orig = self._cls._run_script
        timer = self

        def timed(runner, *args, **kwargs):
            t = time.perf_counter()
            try:
                return timer._orig(runner, *args, **kwargs)
            finally:
                timer.times.append((time.perf_counter() - t) * 1000)

        self._cls._run_script = timed

    def take(self) -> list[float]:
        out, self.times = self.times, []
        return out
