"""Issue 6's GPU check, for a session that has a GPU machine (`device`): the local backend runs a real PyTorch
training script (bench/gpu_train.py) on the GPU, the sync loop samples it through NVML, and this prints
the job's GPU utilisation and memory as the job page's graphs would show them (and writes them to $OUT).

Prepare here (the device machine cannot download; its Python 3.12 has torch, numpy, psutil and nvidia-ml-py):
    bash bench/gpu_check_prepare.sh        # the other dependencies as wheels into .device-wheels/ (git-ignored)
Then one device call:
    run(command="python3 -m pip install -q --no-index --find-links .device-wheels --target /tmp/pylib \\
        sqlalchemy alembic pydantic pydantic-settings itsdangerous && PYTHONPATH=/tmp/pylib:. \\
        PYTHONUNBUFFERED=1 python3 bench/gpu_check.py", carry=[".device-wheels"], timeout_s=400)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from services.config import Settings
    from services.models import Role, User
    from services.portal import build_portal

    data = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    settings = Settings(data_dir=data, backend="local", python_executable=sys.executable, gpu_sample_seconds=2,
                        sync_interval_seconds=0.5)
    portal = build_portal(settings)
    if portal.telemetry is None:
        print("NVML is not available here: no GPU check possible")
        return 1
    shutil.copy(ROOT / "bench" / "gpu_train.py", settings.workspace_dir / "gpu_train.py")
    user = User("gpu-check", Role.ADMIN)
    portal.sync.start()
    try:
        job_id = portal.jobs.submit(user, {"name": "gpu-check", "script": "gpu_train.py", "epochs": 6, "gpus": 1,
                                           "extra_args": "--seconds-per-epoch 10"})
        deadline = time.time() + 300
        while portal.jobs.get(user, job_id).is_active and time.time() < deadline:
            time.sleep(2)
        job = portal.jobs.get(user, job_id)
        series = portal.jobs.gpu_series(job_id)
        report = {"status": job.status.value, "reason": job.reason, "final_metrics": job.final_metrics,
                  "telemetry_error": portal.sync.gpu_error,
                  "gpu": {name: {"seconds": s.x.tolist(), "values": s.y.tolist()} for name, s in series.items()},
                  "log_tail": portal.jobs.log_tail(job_id, 5)}
        print(json.dumps(report, indent=1))
        out = os.environ.get("OUT")
        if out:
            Path(out, "gpu_check.json").write_text(json.dumps(report, indent=1))
        util = series.get("GPU utilisation (%)")
        ok = job.status.value == "Succeeded" and util is not None and max(util.y) > 50
        print("GPU CHECK", "PASSED" if ok else "FAILED", "- peak utilisation",
              f"{max(util.y):.0f} %" if util is not None else "none")
        return 0 if ok else 1
    finally:
        portal.close()


if __name__ == "__main__":
    sys.exit(main())
