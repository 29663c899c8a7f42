"""Save checkpoint on the test control plane: the portal's request lands on the job's running pod as the
annotation its launcher watches, the Job's pod projects its annotations with the Downward API, and the value the
apiserver holds, written as the kubelet writes the Downward API file, reaches a real script through the real
launcher. (KWOK runs no containers and no kubelet: the kubelet's part, the file, is written by the test.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.backends.k8s_manifests import CHECKPOINT_REQUEST
from services.checkpoints import CheckpointService
from services.models import Conflict, JobStatus
from tests.conftest import ROOT, wait_until
from tests.k8s.test_kubernetes_backend import ME, finished, outcome, until

LAUNCHER = ROOT / "services" / "scriptkit" / "portal_launch.py"
SCRIPT = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: (out / "checkpoint.json").write_text("{}"))
(out / "started").write_text("1")
for _ in range(600):
    time.sleep(0.05)
"""


def downward_file(annotations: dict[str, str]) -> str:
    """The kubelet's Downward API rendering of metadata.annotations: sorted `key="value"` lines, Go-quoted."""
    return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(annotations.items()))


def test_save_checkpoint_annotates_the_running_pod_and_reaches_the_script(k8s_portal, cluster, namespace,
                                                                           tmp_path: Path) -> None:
    outcome(k8s_portal, runtime="120s")
    job_id = k8s_portal.jobs.submit(ME, {"name": "k8s-ckpt", "script": "train_example.py", "epochs": 3})
    until(k8s_portal, job_id, lambda j: j.status is JobStatus.RUNNING)

    def pod() -> dict:
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"ml-portal/job-id={job_id}",
                                          "-o", "json"))["items"]
        assert len(pods) == 1
        return pods[0]

    spec = pod()["spec"]
    assert {"name": "podinfo", "downwardAPI": {"defaultMode": 420, "items": [
        {"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}}]}} \
        in spec["volumes"]
    ctr = spec["containers"][0]
    assert {"name": "podinfo", "mountPath": "/portal/podinfo", "readOnly": True} in ctr["volumeMounts"]
    assert ctr["command"][2].endswith("/portal_launch.py") and ctr["command"][3:5] == ["--watch",
                                                                                       "/portal/podinfo/annotations"]
    wait_until(lambda: pod()["status"].get("phase") == "Running", timeout=30)
    service = CheckpointService(k8s_portal.jobs)
    started = time.monotonic()
    made = service.request(ME, job_id)
    assert made.delivered_at is not None and made.error is None
    first = wait_until(lambda: pod()["metadata"]["annotations"].get(CHECKPOINT_REQUEST), timeout=10)
    assert time.monotonic() - started < 10

    # The real launcher with a real script, reading the pod's annotations as the kubelet writes them.
    (tmp_path / "script.py").write_text(SCRIPT)
    podinfo = tmp_path / "annotations"
    podinfo.write_text(downward_file(pod()["metadata"]["annotations"]))
    proc = subprocess.Popen([sys.executable, str(LAUNCHER), "--watch", str(podinfo), "--poll", "0.1", "--",
                             sys.executable, str(tmp_path / "script.py"), str(tmp_path)])
    try:
        wait_until(lambda: (tmp_path / "started").exists(), timeout=15)
        assert not (tmp_path / "checkpoint.json").exists()  # the request it found at start was not for it
        service.request(ME, job_id)
        second = wait_until(lambda: (v := pod()["metadata"]["annotations"][CHECKPOINT_REQUEST]) != first and v,
                            timeout=10)
        (tmp_path / ".new").write_text(downward_file(pod()["metadata"]["annotations"]))
        (tmp_path / ".new").replace(podinfo)  # the kubelet swaps the file in at once
        wait_until(lambda: (tmp_path / "checkpoint.json").exists(), timeout=15)
        assert second > first  # the value says when it was asked for
    finally:
        proc.kill()
        proc.wait()
    assert [r.delivered_at is not None for r in service.requests(ME, job_id)] == [True, True]

    k8s_portal.jobs.stop(ME, job_id)
    finished(k8s_portal, job_id)
    with pytest.raises(Conflict, match="not running"):
        service.request(ME, job_id)
