"""The portal's launcher (services/scriptkit/portal_launch.py) with a real script in a real subprocess: a change of
the pod's annotations file, written the way the kubelet writes Downward API files, reaches the script as SIGUSR1
and the script writes its checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from services.scriptkit.portal_launch import REQUEST_KEY, read_annotation

LAUNCHER = Path(__file__).resolve().parent.parent / "services" / "scriptkit" / "portal_launch.py"
SCRIPT = """
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
asked = []
signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
(out / "started").write_text("1")
for epoch in range(1, 600):
    time.sleep(0.05)
    if asked:
        asked.clear()
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / f"manual-{epoch}.json").write_text("{}")
        print(f"Saved checkpoint manual-{epoch}.json", flush=True)
    if (out / "finish").exists():
        sys.exit(3)
"""


def _write_annotations(path: Path, value: str | None) -> None:
    """As the kubelet does: the new content in a fresh file swapped in at once (readers never see half a file)."""
    lines = ['kubernetes.io/config.seen="2026-01-01T00:00:00Z"', 'portal.ml/experiment="demo"']
    if value is not None:
        lines.append(f'{REQUEST_KEY}="{value}"')
    tmp = path.with_name(".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_changed_request_reaches_the_script_and_it_writes_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    annotations = tmp_path / "annotations"
    _write_annotations(annotations, "1")  # a value already there at start was for an earlier launch: no signal
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--watch", str(annotations), "--poll", "0.1", "--",
         sys.executable, "-u", str(tmp_path / "script.py"), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: (tmp_path / "started").exists())
        time.sleep(0.5)
        assert not (tmp_path / "checkpoints").exists()
        _write_annotations(annotations, "2")
        assert _wait_for(lambda: len(list((tmp_path / "checkpoints").glob("*.json"))) == 1)
        _write_annotations(annotations, "2")  # rewritten with the same value (another annotation changed): nothing
        time.sleep(0.5)
        _write_annotations(annotations, "3")
        assert _wait_for(lambda: len(list((tmp_path / "checkpoints").glob("*.json"))) == 2)
        (tmp_path / "finish").write_text("1")
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 3  # the script's own exit code is the pod's
    assert out.count("sent to the script as SIGUSR1") == 2
    assert out.count("Saved checkpoint manual-") == 2


def test_sigterm_reaches_the_script(tmp_path: Path) -> None:
    """A pod being deleted: the kubelet's SIGTERM to the launcher ends the script, not only the launcher."""
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--watch", str(tmp_path / "none"), "--",
                             sys.executable, "-u", str(tmp_path / "script.py"), str(tmp_path)])
    assert _wait_for(lambda: (tmp_path / "started").exists())
    proc.terminate()
    assert proc.wait(timeout=10) == 128 + 15


def test_annotations_file_is_read_as_the_kubelet_quotes_it(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    path.write_text(f'a="x=y"\n{REQUEST_KEY}="2026-12-02T06:00:00.123456+00:00"\nb="\\"quoted\\""\n')
    assert read_annotation(path) == "2026-12-02T06:00:00.123456+00:00"
    assert read_annotation(path, "b") == '"quoted"'
    assert read_annotation(tmp_path / "missing") is None
