"""A multi-user portal with the local backend: a hostile job gets nothing of the portal or of other users.

The portal runs as a user starts it (`streamlit run`, proxy mode) as root, so every job runs under its own UID in
its own network; tests/data/hostile_job.py tries each way out and records what it got.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.auth import sign_link
from services.backends.local_sandbox import sandbox_problem
from services.config import Settings
from services.models import Role, User
from tests.conftest import ROOT, PortalServer, create_token, sandbox_python, sandbox_skip_reason, wait_until

HOSTILE = ROOT / "tests" / "data" / "hostile_job.py"
pytestmark = pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")


def _api(server: PortalServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _finished(api: httpx.Client, job_id: int) -> dict:
    return wait_until(lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["finished"] and j, timeout=90)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_hostile_job_gets_nothing_of_the_portal_or_other_users(open_tmp_path: Path) -> None:
    data = open_tmp_path / "portal-data"
    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python(),
           "PORTAL_PROMETHEUS_TOKEN": "prom-SECRET-token", "SHARED_SECRET_OF_THE_PORTAL": "env-SECRET"}
    server = PortalServer(data, env=env).start()
    try:
        alice = _api(server, create_token(data, "alice"))
        bob = _api(server, create_token(data, "bob"))
        # Alice's job leaves a secret in its output.
        victim_script = ('import pathlib, time; pathlib.Path("secret.txt").write_text("alice-secret"); '
                         'pathlib.Path("/tmp/victim-scratch.txt").write_text("alice-scratch"); time.sleep(20)\n')
        up = alice.post("/api/v1/files", files={"file": ("victim.py", victim_script.encode(), "text/x-python")})
        assert up.status_code == 201, up.text
        victim = alice.post("/api/v1/jobs", json={"name": "victim", "script": up.json()["script"], "epochs": 1})
        assert victim.status_code == 201, victim.text
        victim_id = victim.json()["id"]
        # Alice's job keeps running (with a file in its /tmp) while Bob's hostile job looks around.
        wait_until(lambda: alice.get(f"/api/v1/jobs/{victim_id}").json()["status"] == "Running", timeout=30)
        wait_until(lambda: (data / "jobs" / str(victim_id) / "output" / "secret.txt").exists(), timeout=30)

        key, db = data / "secret.key", data / "portal.db"
        sign_link(Settings(data_dir=data), User(name="alice", role=Role.RESEARCHER), job=victim_id)  # makes the key
        before = (_digest(key),)
        tokens_before = subprocess.run(["sqlite3", str(db), "select count(*) from api_tokens"], capture_output=True,
                                       text=True).stdout if Path("/usr/bin/sqlite3").exists() else None

        up = bob.post("/api/v1/files", files={"file": ("hostile.py", HOSTILE.read_bytes(), "text/x-python")})
        assert up.status_code == 201, up.text
        extra = f"--portal-port {server.port} --victim-job {victim_id}"
        hostile = bob.post("/api/v1/jobs", json={"name": "hostile", "script": up.json()["script"], "epochs": 1,
                                                 "extra_args": extra})
        assert hostile.status_code == 201, hostile.text
        job = _finished(bob, hostile.json()["id"])
        log = bob.get(f"/api/v1/jobs/{job['id']}/logs").json()["lines"]
        assert job["status"] == "Succeeded", log

        attempts = json.loads(bob.get(f"/api/v1/jobs/{job['id']}/files/attempts.json").content)
        print(json.dumps(attempts, indent=1))  # shown when the test fails
        got = {name: what for name, what in attempts.items() if not what.startswith("refused")}
        assert not got, f"the hostile job got through: {got}"
        assert len(attempts) >= 18
        # What a job may do still works: its output and its log reach the owner.
        assert bob.get(f"/api/v1/jobs/{job['id']}/files/model.txt").content == b"weights"
        assert "hostile job done" in log and "forged line" not in log
        # Nothing changed behind the portal's back.
        assert _digest(key) == before[0]
        if tokens_before is not None:
            assert subprocess.run(["sqlite3", str(db), "select count(*) from api_tokens"], capture_output=True,
                                  text=True).stdout == tokens_before
        assert bob.get("/api/v1/me").status_code == 200
        assert alice.post(f"/api/v1/jobs/{victim_id}/stop", json={}).status_code == 202
        # Once a job has ended its output is the portal's: a later job that gets the same UID cannot open it.
        out = data / "jobs" / str(job["id"]) / "output"
        assert (out.stat().st_uid, out.stat().st_mode & 0o777) == (0, 0o700)
    finally:
        server.stop()


def test_the_portals_own_files_are_readable_by_the_portal_alone(open_tmp_path: Path) -> None:
    data = open_tmp_path / "portal-data"
    server = PortalServer(data, env={"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}).start()
    try:
        api = _api(server, create_token(data, "carol"))
        job = api.post("/api/v1/jobs", json={"name": "perm", "script": "train_example.py", "epochs": 1,
                                             "extra_args": "--seconds-per-epoch 0"})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        _finished(api, job_id)
        jdir = data / "jobs" / str(job_id)
        for path in (data / "portal.db", data / "secret.key", jdir / "launch.json", jdir / "state.json",
                     jdir / "job.log"):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others: {oct(path.stat().st_mode)}"
        assert (data / "workspace").stat().st_mode & 0o077 == 0
    finally:
        server.stop()


def test_finished_local_jobs_leave_no_zombies(portal, user, workspace_script) -> None:
    import psutil

    from tests.conftest import run_to_end

    script = workspace_script("quick.py", "print('done')\n")
    ids = [portal.jobs.submit(user, {"name": f"z{i}", "script": script, "epochs": 1}) for i in range(3)]
    for job_id in ids:
        run_to_end(portal, user, job_id)
    runners = {json.loads((portal.settings.jobs_dir / str(i) / "state.json").read_text())["runner_pid"] for i in ids}

    def zombies() -> list[int]:
        return [c.pid for c in psutil.Process().children() if c.pid in runners and c.status() == psutil.STATUS_ZOMBIE]

    # A runner exits just after it writes the outcome: the sync loop's next ticks (every 0.5 s) reap it.
    for _ in range(3):
        portal.sync.tick()
        time.sleep(0.2)
    assert not zombies(), f"{len(zombies())} finished runners were never reaped"


def test_a_multi_user_portal_refuses_to_start_where_jobs_cannot_be_isolated(tmp_path: Path) -> None:
    # pytest's tmp_path (0700) is a folder the job accounts cannot pass: the refusal names it and the fix.
    settings = Settings(data_dir=tmp_path / "data", auth_mode="proxy", backend="local")
    problem = sandbox_problem(settings)
    assert problem and "Refusing to start in proxy mode with the local backend" in problem and "o+x" in problem
    assert sandbox_problem(Settings(data_dir=tmp_path / "data", auth_mode="single", backend="local")) is None
    # As a user starts it: the server exits with the sentence, it does not serve.
    env = dict(os.environ, PORTAL_DATA_DIR=str(tmp_path / "data"), PORTAL_AUTH_MODE="proxy", PORTAL_BACKEND="local")
    done = subprocess.run([sys.executable, "-m", "streamlit", "run", "portal_app.py", "--server.headless", "true",
                           "--server.port", "0", "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Refusing to start in proxy mode" in done.stdout + done.stderr


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # out of the job's process group: a daemon that would outlive the job
        open("daemon.pid", "w").write(str(os.getpid()))
        time.sleep(120)
    os._exit(0)
time.sleep(0.5)
print("parent done")
"""


def test_nothing_of_a_sandboxed_job_outlives_it(open_tmp_path: Path) -> None:
    import psutil

    from services.portal import build_portal
    from tests.conftest import run_to_end

    portal = build_portal(Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                                   python_executable=sandbox_python()))
    try:
        alice = User(name="alice", role=Role.RESEARCHER)
        script = portal.jobs.workspace.save_upload(alice, "daemon.py", DAEMON.encode())
        job_id = portal.jobs.submit(alice, {"name": "d", "script": script, "epochs": 1})
        run_to_end(portal, alice, job_id)
        pid_file = portal.settings.jobs_dir / str(job_id) / "output" / "daemon.pid"
        assert pid_file.exists(), portal.jobs.log_tail(job_id)
        daemon = int(pid_file.read_text())
        wait_until(lambda: not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE,
                   timeout=10)
        uid = 2_100_000_000 + job_id

        def alive_as_the_job() -> list[int]:  # a zombie holds nothing; init reaps it in its own time
            return [p.pid for p in psutil.process_iter(["uids", "status"]) if p.info["uids"]
                    and uid in p.info["uids"] and p.info["status"] != psutil.STATUS_ZOMBIE]

        wait_until(lambda: not alive_as_the_job(), timeout=10)
    finally:
        portal.close()


SNOOP = """
import json, pathlib, sys
victim = pathlib.Path.cwd().parent.parent / sys.argv[sys.argv.index("--victim-job") + 1]
got = {}
for name in ("launch.json", "job.log", "state.json", "output/model.json", "script/train_example.py"):
    try:
        got[name] = (victim / name).read_text()[:50]
    except OSError as exc:
        got[name] = "refused: " + type(exc).__name__
pathlib.Path("got.json").write_text(json.dumps(got))
"""


def test_job_folders_from_before_the_sandbox_are_locked_when_it_starts(open_tmp_path: Path, monkeypatch) -> None:
    from services.portal import build_portal
    from tests.conftest import run_to_end

    data = open_tmp_path / "data"
    # A laptop portal ran a job with a secret in its environment, as the portals before the sandbox left it.
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET_of_the_laptop_user")
    laptop = build_portal(Settings(data_dir=data, backend="local", python_executable=sandbox_python()))
    me = User(name="me", role=Role.ADMIN)
    old = laptop.jobs.submit(me, {"name": "old", "script": "train_example.py", "epochs": 1,
                                  "extra_args": "--seconds-per-epoch 0"})
    run_to_end(laptop, me, old)
    laptop.close()
    for path in (data / "jobs" / str(old)).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (data / "jobs" / str(old)).chmod(0o755)
    # The same data, now shared behind a proxy: a sandboxed job snoops on the old one.
    shared = build_portal(Settings(data_dir=data, auth_mode="proxy", backend="local",
                                   python_executable=sandbox_python()))
    try:
        mallory = User(name="mallory", role=Role.RESEARCHER)
        script = shared.jobs.workspace.save_upload(mallory, "snoop.py", SNOOP.encode())
        job = shared.jobs.submit(mallory, {"name": "snoop", "script": script, "epochs": 1,
                                           "extra_args": f"--victim-job {old}"})
        run_to_end(shared, mallory, job)
        got = json.loads((data / "jobs" / str(job) / "output" / "got.json").read_text())
        assert all(v.startswith("refused") for v in got.values()), got
    finally:
        shared.close()


def test_a_local_jobs_script_snapshot_is_private_from_the_first_byte(portal, user, workspace_script) -> None:
    script = workspace_script("snap.py", "print(1)\n")
    from services.job_snapshots import write_snapshot

    snapshot = write_snapshot(portal.settings.jobs_dir / "99", portal.jobs.workspace.resolve(user, script),
                              private=portal.jobs.backend.name == "local")
    assert snapshot.stat().st_mode & 0o077 == 0 and snapshot.parent.stat().st_mode & 0o077 == 0


FORK_CHAIN = """
import os, time
# Each process forks and exits at once: at any moment one process lives, each time with a new pid (what a scan of
# /proc followed by kill() one by one cannot catch).
end = time.time() + 60
for _ in range(16):  # sixteen chains at once
    if os.fork() == 0:
        os.setsid()
        while time.time() < end:
            if os.fork() != 0:
                os._exit(0)
        os._exit(0)
time.sleep(1)
print("parent done")
"""


@pytest.mark.parametrize("ending", ["finished", "deleted"])
def test_a_fork_chain_dies_with_its_job(open_tmp_path: Path, ending: str) -> None:
    import psutil

    from services.portal import build_portal
    from tests.conftest import run_to_end

    portal = build_portal(Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                                   python_executable=sandbox_python()))
    try:
        alice = User(name="alice", role=Role.RESEARCHER)
        script = portal.jobs.workspace.save_upload(alice, "chain.py", FORK_CHAIN.encode())
        extra = {"max_runtime_hours": 1} if ending == "finished" else {}
        job_id = portal.jobs.submit(alice, {"name": "c", "script": script, "epochs": 1, **extra})
        uid = 2_100_000_000 + job_id

        def alive_as_the_job() -> list[int]:
            return [p.pid for p in psutil.process_iter(["uids", "status"]) if p.info["uids"]
                    and uid in p.info["uids"] and p.info["status"] != psutil.STATUS_ZOMBIE]

        wait_until(alive_as_the_job, timeout=20)
        if ending == "finished":
            run_to_end(portal, alice, job_id)
        else:
            time.sleep(0.5)
            portal.jobs.delete(alice, job_id)
        time.sleep(1.5)  # a chain that survived would still be forking now
        assert not alive_as_the_job()
    finally:
        portal.close()


def test_a_secret_others_can_read_stops_a_sandboxed_portal_from_starting(open_tmp_path: Path, monkeypatch) -> None:
    settings_file = open_tmp_path / "portal.yaml"
    settings_file.write_text("auth_mode: proxy\n")
    settings_file.chmod(0o644)
    monkeypatch.setenv("PORTAL_CONFIG_FILE", str(settings_file))
    settings = Settings(data_dir=open_tmp_path / "data", backend="local", python_executable=sandbox_python())
    problem = sandbox_problem(settings)
    assert problem and f"{settings_file} holds secrets and other users can read it" in problem
    settings_file.chmod(0o600)
    assert sandbox_problem(settings) is None


def test_a_sandboxed_job_reports_exact_metrics_with_the_portals_helper(open_tmp_path: Path) -> None:
    from services.portal import build_portal
    from tests.conftest import run_to_end

    portal = build_portal(Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                                   python_executable=sandbox_python()))
    try:
        alice = User(name="alice", role=Role.RESEARCHER)
        body = b"from portal_metrics import log_metrics\nlog_metrics(step=1, loss=0.25)\n"
        script = portal.jobs.workspace.save_upload(alice, "exact.py", body)
        job = run_to_end(portal, alice, portal.jobs.submit(alice, {"name": "m", "script": script, "epochs": 1}))
        assert job.status.value == "Succeeded", portal.jobs.log_tail(job.id)
        assert job.final_metrics.get("loss") == 0.25
    finally:
        portal.close()


def test_a_sandboxed_job_runs_with_the_packages_of_a_venv_kept_under_tmp(open_tmp_path: Path, caplog) -> None:
    """A portal installed under /tmp (a clone there, its .venv with it): the venv's python links to the base
    interpreter elsewhere, and a private /tmp once hid the venv itself, so no job could import its packages."""
    import shutil
    import tempfile

    from services.portal import build_portal
    from tests.conftest import run_to_end

    base = Path(sandbox_python()).resolve()
    venv = Path(tempfile.mkdtemp(prefix="mlp-venv-", dir="/tmp"))
    try:
        venv.chmod(0o755)
        subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next(venv.glob("lib/python3*/site-packages"))
        (site / "venv_only_package.py").write_text("WHERE = 'the venv under /tmp'\n")
        for path in (venv, *venv.rglob("*")):  # as pip leaves it under umask 022
            path.chmod(0o755 if path.is_dir() else 0o644 | (path.stat().st_mode & 0o111))
        portal = build_portal(Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                                       python_executable=str(venv / "bin" / "python")))
        # The jobs then share /tmp: the admin is told so when the portal starts.
        assert any("jobs share /tmp" in r.getMessage() for r in caplog.records)
        try:
            alice = User(name="alice", role=Role.RESEARCHER)
            body = b"import venv_only_package\nprint('imported from', venv_only_package.WHERE)\n"
            script = portal.jobs.workspace.save_upload(alice, "venv_import.py", body)
            job = run_to_end(portal, alice, portal.jobs.submit(alice, {"name": "v", "script": script, "epochs": 1}))
            log = "\n".join(portal.jobs.log_tail(job.id))
            assert job.status.value == "Succeeded", log
            assert "imported from the venv under /tmp" in log
        finally:
            portal.close()
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_a_venv_the_job_accounts_cannot_reach_stops_a_sandboxed_portal_with_the_sentence(open_tmp_path: Path) -> None:
    """The venv's python links to a base interpreter they can reach, but its own folder (its packages) they cannot:
    the portal says so at start instead of every job failing with 'permission denied'."""
    closed = open_tmp_path / "closed"
    (closed / "venv" / "bin").mkdir(parents=True)
    closed.chmod(0o700)
    python = closed / "venv" / "bin" / "python"
    python.symlink_to(Path(sandbox_python()).resolve())
    settings = Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                        python_executable=str(python))
    problem = sandbox_problem(settings)
    assert problem and f"cannot pass through {closed} (it lacks o+x)" in problem
    closed.chmod(0o711)
    assert sandbox_problem(settings) is None
