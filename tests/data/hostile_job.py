"""A hostile training script (tests only, never shipped): it tries every way out of its sandbox that a job on a
shared portal might, and writes what each attempt got to attempts.json in its output folder.

argv (after the portal's own flags): --portal-port N --victim-job ID
"""

import contextlib
import json
import os
import socket
import sqlite3
import sys
from pathlib import Path

args = sys.argv[1:]
port = int(args[args.index("--portal-port") + 1])
victim = args[args.index("--victim-job") + 1]
out = Path.cwd()  # the job's output folder: <data>/jobs/<id>/output
job_dir = out.parent
data = job_dir.parent.parent
attempts: dict[str, str] = {}


def attempt(name, fn):
    try:
        got = fn()
        attempts[name] = "GOT " + repr(got)[:200]
    except BaseException as exc:  # every refusal is recorded, not raised
        attempts[name] = f"refused: {type(exc).__name__}: {exc}"[:300]


def need(found):
    if not found:
        raise LookupError("nothing there")
    return found


def portal_pids():
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"streamlit" in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                    pids.append(int(entry.name))
    return pids


attempt("read secret.key", lambda: (data / "secret.key").read_text())
attempt("read portal.db", lambda: (data / "portal.db").read_bytes()[:100])
attempt("write an admin token into portal.db", lambda: sqlite3.connect(data / "portal.db").execute(
    "insert into api_tokens (owner, name, token_hash, prefix, groups, created_at) values "
    "('admin', 'x', 'ff', 'mlp_', '[]', '2026-01-01')").connection.commit())
attempt("list the data directory", lambda: os.listdir(data))
attempt("list the jobs directory", lambda: os.listdir(data / "jobs"))
attempt("read own launch.json", lambda: (job_dir / "launch.json").read_text())
attempt("append to own job.log by name", lambda: (job_dir / "job.log").open("a").write("forged line\n"))
attempt("read another job's output", lambda: (data / "jobs" / victim / "output" / "secret.txt").read_text())
attempt("list another job's output", lambda: os.listdir(data / "jobs" / victim / "output"))
attempt("read another job's script", lambda: os.listdir(data / "jobs" / victim / "script"))
attempt("read the workspace", lambda: os.listdir(data / "workspace"))
attempt("hard-link secret.key into own output", lambda: os.link(data / "secret.key", out / "key-link"))
attempt("read the portal's environment", lambda: [(Path("/proc") / str(p) / "environ").read_bytes()[:200]
                                                   for p in need(portal_pids())])
attempt("signal the portal", lambda: [os.kill(p, 0) for p in need(portal_pids())])
attempt("connect to the portal's port", lambda: socket.create_connection(("127.0.0.1", port), timeout=3).close())
attempt("see the portal's environment variables", lambda: need({k: v for k, v in os.environ.items()
                                                                 if "SECRET" in k or k.startswith("PORTAL_PROM")}))
attempt("list the portal's processes", lambda: need(portal_pids()))
attempt("read another job's /tmp", lambda: Path("/tmp/victim-scratch.txt").read_text())
# What a job may do: write its own output (the test checks this one worked).
(out / "model.txt").write_text("weights")
(out / "attempts.json").write_text(json.dumps(attempts, indent=1))
print("hostile job done")
