"""A training script that logs only to TensorBoard, with TensorBoard's own event-file writer (no TensorFlow, no
torch): what tests/test_tensorboard*.py run as a real job. Its text is written into the portal's workspace."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = '''
import os, sys, time
sys.path.append({site!r})  # a sandboxed job's Python is the system's: TensorBoard from the test's environment
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

out = os.environ["PORTAL_OUTPUT_DIR"]
steps = int(os.environ.get("TB_STEPS", "{steps}"))
train = EventFileWriter(os.path.join(out, "runs", "train"))
val = EventFileWriter(os.path.join(out, "runs", "val"))
for step in range(steps):
    for writer, tag, value in ((train, "loss", 2.0 / (step + 1)), (val, "accuracy", step / steps)):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step * 10, summary=summary))
    train.flush(); val.flush()
    time.sleep({pause})
train.close(); val.close()
print("done")
'''


def site_packages() -> str:
    import tensorboard

    return str(__import__("pathlib").Path(tensorboard.__file__).resolve().parent.parent)


def tb_script(steps: int = 20, pause: float = 0.0, site: str | None = None) -> str:
    return SCRIPT.format(site=site or site_packages(), steps=steps, pause=pause).lstrip()


NEEDED = ("tensorboard", "google", "numpy", "numpy.libs", "absl")  # what the script imports, and theirs


def site_for_sandboxed_jobs(folder: Path) -> str:
    """Where a sandboxed job finds the packages the script needs. A job gets a private /tmp (and /dev/shm): a test
    environment kept there (a clone in /tmp with its .venv) is hidden from a job whose Python is the system's, so
    its packages are copied into `folder` (one the jobs can reach, and that stays visible to them)."""
    import shutil

    site = Path(site_packages())
    if not any(site.is_relative_to(d) for d in ("/tmp", "/dev/shm")):
        return str(site)
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in NEEDED:
        if (site / name).is_dir():
            shutil.copytree(site / name, folder / name, dirs_exist_ok=True)
    return str(folder)


if __name__ == "__main__":
    sys.stdout.write(tb_script())
