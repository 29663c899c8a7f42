"""Links a job makes in its own folder never make the portal read or write outside it.

A job (the local backend's, or a pod writing to its job folder on the data volume) can replace any name below its
job folder at any moment. Each file route of a real running portal is tried with symlinks, hard links and FIFOs
in place of the job's files, and the results zip while a link is switched in and out (the race the listing had).
"""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from services import safe_files
from services.auth import local_user, sign_link
from services.backends.kubernetes import KubernetesBackend
from services.config import Settings
from tests.conftest import ROOT, PortalServer, create_token, wait_until

SECRET = "TOP-SECRET-KEY-MATERIAL"


@pytest.fixture(scope="module")
def portal_with_a_job(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("links") / "portal-data"
    server = PortalServer(data).start()
    token = create_token(data, local_user(Settings(data_dir=data)).name)
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    job = api.post("/api/v1/jobs", json={"name": "links", "script": "train_example.py", "epochs": 1,
                                         "extra_args": "--seconds-per-epoch 0"}).json()
    wait_until(lambda: api.get(f"/api/v1/jobs/{job['id']}").json()["finished"], timeout=60)
    secret = data / "outside-secret.txt"  # stands for secret.key, portal.db, another user's file
    secret.write_text(SECRET)
    try:
        yield server, api, data, job["id"], secret
    finally:
        api.close()
        server.stop()


def _link(server: PortalServer, data: Path, **what) -> str:
    s = Settings(data_dir=data)
    return f"{server.url}/download/{sign_link(s, local_user(s), **what)}"


def _no_secret(resp: httpx.Response) -> None:
    assert SECRET not in resp.text, f"{resp.request.url} returned the file behind a link"
    assert resp.status_code < 500, resp.text


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_swapped_output_file_is_not_found_on_every_route(portal_with_a_job, kind):
    server, api, data, job_id, secret = portal_with_a_job
    out = data / "jobs" / str(job_id) / "output"
    target = out / f"swapped-{kind}.json"
    if kind == "symlink":
        os.symlink(secret, target)
    elif kind == "hardlink":
        os.link(secret, target)
    else:
        os.mkfifo(target)
    name = target.name
    single = api.get(f"/api/v1/jobs/{job_id}/files/{name}")
    assert single.status_code == 404 and "No file" in single.json()["error"]
    signed = httpx.get(_link(server, data, job=job_id, kind="file", path=name), timeout=10)
    assert signed.status_code == 404
    listed = [f["path"] for f in api.get(f"/api/v1/jobs/{job_id}/files").json()["files"]]
    assert name not in listed and "model.json" in listed
    z = api.get(f"/api/v1/jobs/{job_id}/results.zip")
    assert z.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert name not in names and "model.json" in names
    for resp in (single, signed, z):
        _no_secret(resp)


def test_a_linked_folder_in_the_output_is_not_walked(portal_with_a_job):
    _server, api, data, job_id, _ = portal_with_a_job
    out = data / "jobs" / str(job_id) / "output"
    os.symlink(data, out / "portal")  # the whole data directory, key and database included
    try:
        listed = [f["path"] for f in api.get(f"/api/v1/jobs/{job_id}/files").json()["files"]]
        assert not [p for p in listed if p.startswith("portal/")]
        assert api.get(f"/api/v1/jobs/{job_id}/files/portal/outside-secret.txt").status_code == 404
        names = zipfile.ZipFile(io.BytesIO(api.get(f"/api/v1/jobs/{job_id}/results.zip").content)).namelist()
        assert not [n for n in names if n.startswith("portal/")]
    finally:
        (out / "portal").unlink()


def test_a_log_replaced_by_a_link_reads_as_no_log(portal_with_a_job):
    server, api, data, job_id, secret = portal_with_a_job
    jdir = data / "jobs" / str(job_id)
    log = jdir / "job.log"
    kept = log.read_bytes()
    log.unlink()
    os.symlink(secret, log)
    try:
        lines = api.get(f"/api/v1/jobs/{job_id}/logs").json()
        assert SECRET not in str(lines)
        stream = api.get(f"/api/v1/jobs/{job_id}/logs/stream")
        _no_secret(stream)
        signed = httpx.get(_link(server, data, job=job_id, kind="log"), timeout=10)
        assert signed.status_code == 404 and "no log" in signed.json()["error"]
        # A hard link in its place is refused the same way.
        log.unlink()
        os.link(secret, log)
        _no_secret(httpx.get(_link(server, data, job=job_id, kind="log"), timeout=10))
        assert SECRET not in str(api.get(f"/api/v1/jobs/{job_id}/logs").json())
    finally:
        log.unlink()
        log.write_bytes(kept)


def test_a_job_folder_replaced_by_a_link_reads_nothing(portal_with_a_job):
    _server, api, data, job_id, _ = portal_with_a_job
    # On the laptop the job runs as the portal's user and could swap its whole folder for a link.
    jdir = data / "jobs" / str(job_id)
    moved = jdir.with_name(f"{job_id}.moved")
    jdir.rename(moved)
    fake = data / "fake-job"
    (fake / "output").mkdir(parents=True)
    (fake / "job.log").write_text(SECRET + "\n")
    (fake / "output" / "model.json").write_text(SECRET)
    os.symlink(fake, jdir)
    try:
        assert SECRET not in str(api.get(f"/api/v1/jobs/{job_id}/logs").json())
        assert api.get(f"/api/v1/jobs/{job_id}/files/model.json").status_code == 404
        _no_secret(api.get(f"/api/v1/jobs/{job_id}/results.zip"))
    finally:
        jdir.unlink()
        moved.rename(jdir)


def test_the_results_zip_never_holds_a_file_switched_in_after_the_listing(portal_with_a_job):
    _server, api, data, job_id, secret = portal_with_a_job
    out = data / "jobs" / str(job_id) / "output"
    for i in range(20):
        (out / f"ckpt-{i:02d}.bin").write_bytes(os.urandom(64 * 1024))
    stop = threading.Event()

    def swapper() -> None:  # what a hostile job does: a file while listed, a link while zipped
        names = [out / f"ckpt-{i:02d}.bin" for i in range(20)]
        while not stop.is_set():
            for p in names:
                tmp = p.with_suffix(".tmp")
                os.symlink(secret, tmp)
                os.replace(tmp, p)
            time.sleep(0.001)
            for p in names:
                tmp = p.with_suffix(".tmp")
                tmp.write_bytes(b"x" * 1024)
                os.replace(tmp, p)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    leaked = 0
    try:
        deadline = time.monotonic() + 20
        rounds = 0
        while rounds < 30 and time.monotonic() < deadline:
            z = api.get(f"/api/v1/jobs/{job_id}/results.zip")
            assert z.status_code in (200, 404), z.text
            if z.status_code == 200:
                archive = zipfile.ZipFile(io.BytesIO(z.content))
                leaked += sum(SECRET.encode() in archive.read(n) for n in archive.namelist())
            rounds += 1
    finally:
        stop.set()
        thread.join(5)
    assert rounds >= 10
    assert leaked == 0, f"the secret ended up in {leaked} zipped files"


class _Pods:
    """The pod-log source of the Kubernetes backend: a pod that printed two lines (the archive writer is what is
    under test here; the backend's reading of real pods is tested against the control plane in tests/k8s)."""

    def read_namespaced_pod_log(self, *_args, **_kwargs) -> str:
        return "2026-12-01T10:00:00.000000001Z step 1\n2026-12-01T10:00:01.000000001Z step 2\n"


def test_the_kubernetes_log_archive_replaces_a_link_instead_of_writing_through_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    backend = KubernetesBackend.__new__(KubernetesBackend)  # no cluster needed for the archive writer
    backend.settings, backend.core, backend.namespace = settings, _Pods(), "ns"
    backend.requests, backend._count_lock = 0, threading.Lock()
    jdir = settings.jobs_dir / "7"
    jdir.mkdir(parents=True)
    shared = tmp_path / "data" / "workspace" / "train_example.py"
    shared.parent.mkdir(parents=True)
    shared.write_text("print('the shared script')\n")
    os.symlink(shared, jdir / "job.log")  # what the pod did in its job folder
    os.symlink(shared, jdir / "job.rank-1.log")
    for rank in (0, 1):
        assert backend._pull_pod(7, f"pod-{rank}", rank, {}, final=True)
    assert shared.read_text() == "print('the shared script')\n"
    for name in ("job.log", "job.rank-1.log"):
        assert not (jdir / name).is_symlink() and (jdir / name).read_text() == "step 1\nstep 2\n"
    # The cursors file the portal keeps there is written by rename, never through a link either.
    os.symlink(shared, jdir / "log-cursors.json")
    safe_files.write_replace(jdir.parent, "7/log-cursors.json", b"{}")
    assert shared.read_text() == "print('the shared script')\n" and (jdir / "log-cursors.json").read_text() == "{}"


def test_downloads_abandoned_before_the_first_byte_leave_no_open_file(portal_with_a_job):
    import socket
    from urllib.parse import urlsplit

    server, api, data, job_id, _ = portal_with_a_job
    model = data / "jobs" / str(job_id) / "output" / "model.json"
    token = api.headers["Authorization"]
    port = urlsplit(server.url).port

    def open_on_model() -> int:
        fds = Path(f"/proc/{server.proc.pid}/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(model))

    before = open_on_model()
    for _ in range(60):  # a client that asks and hangs up at once
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(f"GET /api/v1/jobs/{job_id}/files/model.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Authorization: {token}\r\nConnection: close\r\n\r\n".encode())
    assert api.get(f"/api/v1/jobs/{job_id}/files/model.json").status_code == 200  # served on
    wait_until(lambda: open_on_model() <= before, timeout=15)


def test_listing_a_job_with_very_many_folders_holds_one_descriptor_at_a_time(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "output"
    for i in range(3000):  # what a job may make in its output; each folder waits its turn in the walk
        (out / f"d{i:05d}").mkdir(parents=True)
        (out / f"d{i:05d}" / "f.txt").write_text("x")
    # In a process allowed 64 descriptors: a walk that kept the waiting folders open would run out and miss them.
    probe = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
             "from services.safe_files import walk_files; "
             f"print(len(list(walk_files(__import__('pathlib').Path({str(out)!r}), 10_000))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "3000", done.stderr


def test_a_sparse_file_is_left_out_of_the_results_zip(portal_with_a_job):
    _server, api, data, job_id, _ = portal_with_a_job
    sparse = data / "jobs" / str(job_id) / "output" / "huge.bin"
    with open(sparse, "wb") as fh:  # 4 GiB that take no disk space: a zip would deflate 4 GiB of zeros
        fh.truncate(4 << 30)
    try:
        started = time.monotonic()
        z = api.get(f"/api/v1/jobs/{job_id}/results.zip", timeout=60)
        assert z.status_code == 200 and time.monotonic() - started < 20
        names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
        assert "huge.bin" not in names and "model.json" in names
    finally:
        sparse.unlink()
