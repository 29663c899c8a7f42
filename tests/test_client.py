"""The Python client (client/ml_job_portal): its wire handling against fakes, then against the real portal."""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from ml_job_portal import (
    AuthenticationError,
    ConflictError,
    Job,
    JobClient,
    JobFailed,
    NotFoundError,
    PortalConnectionError,
    PortalError,
    ServerError,
    ValidationError,
)
from ml_job_portal import client as client_module
from ml_job_portal.client import _sse_lines, _SSEParser

from tests.conftest import ROOT, PortalServer, wait_until

URL = "http://portal.test"


def job_json(job_id: int = 7, status: str = "Running", **extra: object) -> dict:
    finished = status in ("Succeeded", "Failed", "Stopped", "Submit failed")
    return {"id": job_id, "name": "demo", "owner": "me", "status": status, "group": "Running", "finished": finished,
            "reason": None, "created_at": "2024-05-01T12:00:00Z", "started_at": None, "finished_at": None,
            "epoch": None, "total_epochs": 3, "progress": None, "eta_seconds": None, "latest_metrics": {},
            "final_metrics": {}, "gpus": 0, "nodes": 1, "cost_per_hour": 0.0, "exit_code": None, "request": {},
            "url": f"/job?id={job_id}", **extra}


def fake(handler: Callable[[httpx.Request], httpx.Response], token: str | None = "tok") -> JobClient:
    return JobClient(URL, token, transport=httpx.MockTransport(handler))


def sse(*chunks: bytes, fail: Exception | None = None) -> httpx.Response:
    def body() -> Iterator[bytes]:
        yield from chunks
        if fail is not None:
            raise fail

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


# The event-stream parser ---------------------------------------------------------------------------
def parse(chunks: list[bytes]) -> list[tuple[str, str, str | None]]:
    parser = _SSEParser()
    out = []
    for line in _sse_lines(chunks):
        event = parser.feed(line)
        if event is not None:
            out.append((event.type, event.data, event.id))
    return out


# What ml_job_portal.client exported before it was split into modules (commit 71c638a): its public classes and
# constants. Old notebooks import them from there.
OLD_CLIENT_NAMES = [
    "API_PREFIX", "USER_AGENT", "FINISHED_STATUSES", "LIST_PAGE_SIZE", "STREAM_MAX_FAILURES", "STREAM_RETRY_SECONDS",
    "STREAM_READ_TIMEOUT", "MUTATING", "PortalError", "AuthenticationError", "PermissionDenied", "NotFoundError",
    "ConflictError", "ValidationError", "ServerError", "PortalConnectionError", "JobFailed", "JobClient", "Job",
    "JobResults",
]


@pytest.mark.parametrize("first", ["ml_job_portal.client", "ml_job_portal.jobs", "ml_job_portal.errors"])
def test_every_name_the_old_client_module_exported_still_imports_from_it(first: str):
    # A fresh interpreter, entering the package by each module in turn: a circular import shows up only there.
    code = (f"import {first}\nfrom ml_job_portal.client import {', '.join(OLD_CLIENT_NAMES)}\n"
            "import ml_job_portal, ml_job_portal.client as c\n"
            "assert c.NotFoundError is ml_job_portal.NotFoundError and c.JobResults is ml_job_portal.JobResults\n"
            "assert set(ml_job_portal.__all__) - {'__version__'} <= set(c.__all__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_sse_lines_split_at_cr_lf_and_crlf_only_even_across_chunks():
    chunks = [b"\xef\xbb", b"\xbfa\r", b"\nb\rc\n", b"page\x0cbreak \xe2\x80\xa8 x\r", b"", b"\ntail-without-end"]
    assert list(_sse_lines(chunks)) == ["a", "b", "c", "page\x0cbreak \u2028 x"]


def test_sse_events_multi_line_data_comments_ids_and_end():
    stream = (b": keep-alive\n\nid: 0\ndata: first\n\nid: 1\ndata:two\ndata:  lines\n\n"
              b"data\n\n: ping\nid: 2\ndata: \n\nevent: end\ndata: {\"status\": \"Succeeded\"}\n\n")
    assert parse([stream[i : i + 5] for i in range(0, len(stream), 5)]) == [
        ("message", "first", "0"),
        ("message", "two\n lines", "1"),
        ("message", "", "1"),  # `data` without a colon is an empty value; the id persists
        ("message", "", "2"),  # an empty log line is still a line
        ("end", '{"status": "Succeeded"}', "2"),
    ]


# Requests and errors, against a fake transport ------------------------------------------------------
def test_requests_carry_the_token_and_mutations_carry_json():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/stop"):
            return httpx.Response(202, json=job_json(status="Running"))
        return httpx.Response(201, json=job_json())

    client = fake(handler, token=" tok\n")
    job = client.submit_job("demo", "train.py", epochs=3, template="base")
    job.stop()
    job.delete()
    assert [r.url.path for r in seen] == ["/api/v1/jobs", "/api/v1/jobs/7/stop", "/api/v1/jobs/7"]
    for request in seen:
        assert request.headers["authorization"] == "Bearer tok"
        assert request.headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {"name": "demo", "script": "train.py", "epochs": 3, "template": "base"}
    assert json.loads(seen[1].content) == {} and json.loads(seen[2].content) == {}
    assert job.url == f"{URL}/job?id=7" and job.created_at is not None and job.created_at.year == 2024


def test_errors_map_to_exceptions_with_the_servers_sentence():
    answers = {
        "/api/v1/jobs/1": httpx.Response(404, json={"error": "Job 1 was not found."}),
        "/api/v1/jobs/2/stop": httpx.Response(409, json={"error": "Job 2 has already finished."}),
        "/api/v1/jobs": httpx.Response(422, json={"error": "Some values are not valid.",
                                                  "problems": {"name": "use lower-case letters"}}),
        "/api/v1/me": httpx.Response(503, json={"error": "The database is locked."}),
        "/api/v1/templates": httpx.Response(200, text="<html>a web page</html>"),
    }
    client = fake(lambda request: answers[request.url.path])
    with pytest.raises(NotFoundError) as nf:
        client.get_job(1)
    assert str(nf.value) == "Job 1 was not found." and nf.value.status_code == 404
    with pytest.raises(ConflictError):
        Job(client, job_json(2)).stop()
    with pytest.raises(ValidationError) as bad:
        client.submit_job("Bad Name!", "train.py")
    assert bad.value.problems == {"name": "use lower-case letters"}
    assert bad.value.message == "Some values are not valid."
    assert "name: use lower-case letters" in str(bad.value)
    with pytest.raises(ServerError):
        client.me()
    with pytest.raises(PortalError, match="not JSON"):
        client.templates()


def test_a_missing_token_is_named_in_the_401(monkeypatch):
    monkeypatch.delenv("PORTAL_TOKEN", raising=False)
    client = fake(lambda request: httpx.Response(401, json={"error": "Missing API token."}), token=None)
    with pytest.raises(AuthenticationError, match="PORTAL_TOKEN") as exc:
        client.me()
    assert exc.value.status_code == 401

    monkeypatch.setenv("PORTAL_TOKEN", "from-env")
    assert fake(lambda r: httpx.Response(200, json={"auth": r.headers["authorization"]}), token=None).me() == {
        "auth": "Bearer from-env"}


def test_network_errors_name_the_portal():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(PortalConnectionError, match=re.escape(URL)):
        fake(refuse).list_jobs()


def test_list_jobs_pages_through_has_more():
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        limit, offset = int(params["limit"]), int(params["offset"])
        ids = range(offset, min(offset + limit, 120))
        return httpx.Response(200, json={"jobs": [job_json(i) for i in ids], "limit": limit, "offset": offset,
                                         "has_more": offset + limit < 120})

    client = fake(handler)
    assert [j.id for j in client.list_jobs(limit=70, group="Failed")] == list(range(70))
    assert [(a["offset"], a["limit"], a["group"], a["scope"]) for a in asked] == [
        ("0", "50", "Failed", "mine"), ("50", "20", "Failed", "mine")]
    assert "search" not in asked[0]
    assert len(client.list_jobs(limit=None)) == 120


def test_stream_logs_resumes_after_a_dropped_connection_without_repeats():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return sse(b"retry: 0\n\nid: 0\ndata: one\n\nid: 1\ndata: two\n\n", b"id: 2\ndata: thr",
                       fail=httpx.ReadError("connection reset"))
        # A server that goes by the offset alone replays; the client drops what it already yielded.
        return sse(b"retry: 0\n\nid: 0\ndata: one\n\nid: 1\ndata: two\n\nid: 2\ndata: three\n\n",
                   b"event: end\ndata: {\"status\": \"Succeeded\"}\n\n")

    job = Job(fake(handler), job_json())
    assert list(job.stream_logs(rank=1)) == ["one", "two", "three"]
    assert "last-event-id" not in requests[0].headers
    assert requests[1].headers["last-event-id"] == "1"
    assert dict(requests[1].url.params) == {"offset": "0", "rank": "1"}
    assert requests[0].headers["accept"] == "text/event-stream"
    assert job.status == "Succeeded" and job.finished


def test_stream_logs_gives_up_after_repeated_failures_and_passes_on_client_errors(monkeypatch):
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"error": "Restarting."})

    monkeypatch.setattr(client_module, "STREAM_RETRY_SECONDS", 0)
    with pytest.raises(PortalConnectionError, match="Restarting"):
        list(Job(fake(flaky), job_json()).stream_logs())
    assert len(calls) == client_module.STREAM_MAX_FAILURES

    gone = fake(lambda r: httpx.Response(404, json={"error": "Job 7 was not found."}))
    with pytest.raises(NotFoundError):
        list(Job(gone, job_json()).stream_logs())


def test_wait_results_and_download(tmp_path):
    polls = iter(["Running", "Running", "Succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/status"):
            status = next(polls)
            return httpx.Response(200, json={"id": 7, "status": status, "finished": status == "Succeeded",
                                             "reason": None, "epoch": 3, "total_epochs": 3, "progress": 1.0,
                                             "eta_seconds": 0})
        if path.endswith("/files"):
            return httpx.Response(200, json={"files": [{"path": "model.json", "size": 3, "modified": "x"},
                                                       {"path": "checkpoints/epoch 1.json", "size": 2,
                                                        "modified": "x"}]})
        if "/files/" in path:
            return httpx.Response(200, content=path.encode())
        return httpx.Response(200, json=job_json(status="Succeeded", final_metrics={"loss": 0.25, "accuracy": 0.9}))

    job = Job(fake(handler), job_json())
    assert job.wait(poll=0.01) is job and job.status == "Succeeded"
    results = job.get_results()
    assert results.final_loss == 0.25 and results.files == ["model.json", "checkpoints/epoch 1.json"]
    with pytest.raises(AttributeError, match="accuracy, loss"):
        results.final_perplexity
    assert "final_accuracy" in dir(results) and "'loss': 0.25" in repr(results)

    saved = job.download("checkpoints/epoch 1.json", tmp_path)
    assert saved == tmp_path / "epoch 1.json"
    assert saved.read_text() == "/api/v1/jobs/7/files/checkpoints/epoch 1.json"
    assert not list(tmp_path.glob("*.part"))
    assert job.download("model.json", tmp_path / "out" / "m.json").is_file()


def test_wait_can_raise_and_time_out():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"id": 7, "status": "Running", "finished": False})
        return httpx.Response(200, json=job_json(status="Failed", reason="Out of memory"))

    job = Job(fake(handler), job_json())
    with pytest.raises(TimeoutError, match="still Running"):
        job.wait(timeout=0.05, poll=0.01)

    def failed(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"id": 7, "status": "Failed", "finished": True})
        return httpx.Response(200, json=job_json(status="Failed", reason="Out of memory"))

    job = Job(fake(failed), job_json())
    assert job.wait().status == "Failed"
    with pytest.raises(JobFailed, match="Out of memory"):
        job.wait(raise_on_failure=True)


# Against the real portal -----------------------------------------------------------------------------
def local_user_name() -> str:
    # The portal's single-user mode acts as the account that runs it (services.auth.local_user).
    try:
        return getpass.getuser() or "researcher"
    except (KeyError, OSError):
        return "researcher"


@dataclass
class Live:
    server: PortalServer
    token: str
    client: JobClient


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One portal for this module's live tests (starting Streamlit takes seconds); each test names its own jobs."""
    from tests.conftest import create_token

    server = PortalServer(tmp_path_factory.mktemp("client") / "portal-data").start()
    try:
        token = create_token(server.data_dir, local_user_name())
        with JobClient(server.url, token) as client:
            try:
                yield Live(server, token, client)
            finally:
                # A failed test must not leave a 1000-epoch job running.
                for job in client.list_jobs(group="Running", limit=None):
                    with contextlib.suppress(PortalError):
                        job.stop()
    finally:
        server.stop()


def the_job(client: JobClient, name: str) -> Job:
    jobs = [j for j in client.list_jobs(search=name, limit=None) if j.name == name]
    assert len(jobs) == 1, jobs
    return jobs[0]


@pytest.mark.timeout(180)
def test_notebook_example_runs_against_the_portal(live: Live):
    # The checkout's client first on the path, so this tests these files even if an older copy is installed.
    pythonpath = os.pathsep.join(p for p in [str(ROOT / "client"), os.environ.get("PYTHONPATH", "")] if p)
    env = dict(os.environ, PORTAL_URL=live.server.url, PORTAL_TOKEN=live.token, PYTHONPATH=pythonpath)
    proc = subprocess.run([sys.executable, "examples/notebook_client.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    match = re.search(r"^Final loss: (\S+)$", out, re.MULTILINE)
    assert match, out
    loss = float(match.group(1))
    assert math.isfinite(loss) and loss > 0
    assert "Epoch 3/3" in out  # the streamed log
    assert "model.json" in out  # results.files
    assert "Job(id=" in out and "gpt-finetune-v3" in out  # client.list_jobs()[:5]
    assert re.search(r"^gpt-finetune-v3: accuracy \d\.\d{3}$", out, re.MULTILINE), out  # client.history(...)

    job = the_job(live.client, "gpt-finetune-v3")
    assert job.status == "Succeeded" and job.finished and job.group == "Completed"
    assert job.final_metrics["loss"] == pytest.approx(loss)
    assert job.request["epochs"] == 3 and job.request["extra_args"] == "--seconds-per-epoch 0.2"


def test_bad_or_missing_token_is_refused(live: Live):
    assert live.client.me()["name"] == local_user_name()
    for token in ["not-a-real-token", live.token + "x"]:
        with JobClient(live.server.url, token) as client:
            with pytest.raises(AuthenticationError) as exc:
                client.me()
            assert exc.value.status_code == 401 and exc.value.message
            with pytest.raises(AuthenticationError):
                client.submit_job(name="sneaky", script="train_example.py")
    with JobClient(live.server.url, token="") as client, pytest.raises(AuthenticationError, match="PORTAL_TOKEN"):
        client.list_jobs()
    assert not [j for j in live.client.list_jobs(limit=None) if j.name == "sneaky"]


def test_bad_values_are_reported_per_field(live: Live):
    with pytest.raises(ValidationError) as exc:
        live.client.submit_job(name="Bad Name!", script="train_example.py")
    assert exc.value.status_code == 422
    assert set(exc.value.problems) == {"name"}
    assert isinstance(exc.value.problems["name"], str) and len(exc.value.problems["name"]) > 10
    assert exc.value.message  # the server's own sentence

    with pytest.raises(ValidationError) as exc:
        live.client.submit_job(name="ok-name", script="train_example.py", epochs=0, learning_rate=-1)
    assert {"epochs", "learning_rate"} <= set(exc.value.problems)
    assert not [j for j in live.client.list_jobs(limit=None) if j.name in ("bad-name", "ok-name")]


@pytest.mark.timeout(120)
def test_stop_ends_a_running_job_stopped(live: Live):
    job = live.client.submit_job(name="long-run", script="train_example.py", epochs=1000,
                                 extra_args="--seconds-per-epoch 1")
    try:
        # Running and already training, so that the stop reaches the script itself.
        wait_until(lambda: job.refresh_status()["status"] == "Running" and any(
            line.startswith("Epoch") for line in job.logs(tail=20)), timeout=60, interval=0.3)
        assert job.stop() is job
        job.wait(timeout=60, poll=0.3)
        assert job.status == "Stopped" and job.finished and job.group == "Stopped"
        with pytest.raises(ConflictError) as exc:
            job.stop()
        assert exc.value.status_code == 409
    finally:
        if not job.refresh().finished:
            job.stop()


@pytest.mark.timeout(120)
def test_stream_logs_follows_the_job_and_ends_by_itself(live: Live):
    job = live.client.submit_job(name="stream-logs", script="train_example.py", epochs=3,
                                 extra_args="--seconds-per-epoch 1.5")
    lines: list[str] = []
    running_at_first_line = None
    started = time.monotonic()
    for line in job.stream_logs():
        if not lines:
            # Lines arrive while the job runs (about 4.5 s here), not all at once at its end.
            running_at_first_line = not live.client.get_job(job.id).finished
        lines.append(line)
    assert time.monotonic() - started < 90
    assert running_at_first_line is True
    assert lines[0].startswith("Training on"), lines
    assert [line for line in lines if line.startswith("Epoch")] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert lines[-1] == "Training finished; model written to model.json"
    assert job.status == "Succeeded"  # from the stream's end event

    job.refresh()
    assert job.finished and job.status == "Succeeded"
    # The stream sent the whole archive, each line once; offset=K starts at the K-th line (from 0).
    assert job.logs(tail=1000) == lines
    assert list(job.stream_logs(offset=2)) == lines[2:]


TINY_SCRIPT = """\
import os, pathlib
print("Epoch 1/1", flush=True)
print("Loss: 0.5", flush=True)
pathlib.Path(os.environ["PORTAL_OUTPUT_DIR"], "out.txt").write_text("done")
"""


@pytest.mark.timeout(120)
def test_upload_template_clone_download_and_delete(live: Live, tmp_path):
    client = live.client
    local = tmp_path / "tiny_train.py"
    local.write_text(TINY_SCRIPT)
    script = client.upload_script(local)
    assert script.endswith(".py") and script in [f["path"] for f in client.workspace_files()]
    assert client.download_workspace_file(script, tmp_path / "back.py").read_text() == TINY_SCRIPT

    template = client.save_template("tiny", {"script": script, "epochs": 1})
    assert "tiny" in [t["name"] for t in client.templates()]
    job = client.submit_job(name="from-template", script=script, template="tiny")
    assert job.request["epochs"] == 1 and job.request["template"] == "tiny"
    job.wait(timeout=60, poll=0.2, raise_on_failure=True)
    results = job.get_results()
    assert results.final_loss == 0.5 and "out.txt" in results.files
    assert job.download("out.txt", tmp_path).read_text() == "done"
    assert "loss" in job.metrics()["series"]
    assert "Loss: 0.5" in job.logs()

    copy = job.clone(name="from-template-copy")
    assert copy.id != job.id and copy.request["script"] == script and copy.request["template"] == "tiny"
    copy.wait(timeout=60, poll=0.2)
    copy.delete()
    with pytest.raises(NotFoundError):
        client.get_job(copy.id)
    client.delete_template(template["id"])
    assert "tiny" not in [t["name"] for t in client.templates()]
