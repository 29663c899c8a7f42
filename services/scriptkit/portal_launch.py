"""The portal's launcher for a job's script on a cluster: runs the command and turns a "Save checkpoint" request
into the documented signal (SIGUSR1) for the script.

The portal has no ``pods/exec``; it sets the annotation ``portal.ml/checkpoint-request`` on the job's pods, the
kubelet writes the pod's annotations into a Downward API file, and this launcher, polling that file, signals the
script's process group when the request's value changes. Standard library only: the job image needs nothing
but Python.

    python -u portal_launch.py --watch /portal/podinfo/annotations -- python -u train.py --epochs 3

It forwards SIGTERM and SIGINT (a pod being deleted) to the script's group and exits with the script's code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

REQUEST_KEY = "portal.ml/checkpoint-request"
POLL_SECONDS = 1.0


def read_annotation(path: Path, key: str = REQUEST_KEY) -> str | None:
    """The value of one annotation in a Downward API file (lines ``key="value"``, Go-quoted), None if absent."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # not projected (yet): nothing requested
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        if sep and name == key:
            try:
                value = json.loads(raw)  # Go's %q of a plain value reads as a JSON string
            except ValueError:
                return raw.strip('"')
            return value if isinstance(value, str) else str(value)
    return None


def _group_members(pgid: int) -> list[int]:
    """The processes of a process group but its leader (torchrun's workers), read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        try:
            # Fields after the command's closing parenthesis: state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def send_checkpoint_signal(pgid: int, spare_leader: bool) -> None:
    """SIGUSR1 to the script's group; with torchrun the leader is spared, as SIGUSR1 would end it."""
    try:
        if not spare_leader:
            os.killpg(pgid, signal.SIGUSR1)
            return
        for pid in _group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        pass


def watch(path: Path, proc: subprocess.Popen[bytes], spare_leader: bool, stop: threading.Event,
          poll: float = POLL_SECONDS) -> None:
    """Signal the script at each change of the request's value; the value found at start was for no one."""
    last = read_annotation(path)
    while not stop.wait(poll):
        value = read_annotation(path)
        if value is not None and value != last:
            send_checkpoint_signal(proc.pid, spare_leader)
            # No `name=number` pairs: the portal would read those as metrics.
            print(f"[portal] Save checkpoint request {json.dumps(value)} sent to the script as SIGUSR1",
                  flush=True)
        if value is not None:
            last = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watch", type=Path, required=True, help="the Downward API file of the pod's annotations")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS)
    parser.add_argument("--spare-leader", action="store_true",
                        help="signal the group's workers, not its leader (torchrun)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    # Its own process group: the signal reaches the script's workers (data loaders, torchrun's ranks) too.
    proc = subprocess.Popen(command, start_new_session=True)

    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(args.watch, proc, args.spare_leader, stop, args.poll),
                               daemon=True)
    watcher.start()
    code = proc.wait()
    stop.set()
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention (SIGKILL is 137)


if __name__ == "__main__":
    sys.exit(main())
