"""The HTTP routes of the running portal (started as a user starts it)."""

import io
import zipfile

import httpx

from tests.conftest import wait_until


def submit_example(server) -> int:
    # The server's own process owns the job; the test reaches its store through the same data dir.
    from services.auth import current_user
    from services.config import Settings
    from services.portal import build_portal

    p = build_portal(Settings(data_dir=server.data_dir))
    try:
        return p.jobs.submit(current_user(), {"name": "api", "script": "train_example.py", "epochs": 1,
                                              "extra_args": "--seconds-per-epoch 0"})
    finally:
        p.close()


def test_healthz_reports_the_sync_loop(server):
    body = httpx.get(f"{server.url}/healthz").json()
    assert body["status"] == "ok" and body["backend"] == "local"
    assert body["sync"]["running"] is True


def test_downloads_of_log_files_and_results(server):
    job_id = submit_example(server)
    wait_until(lambda: "Training finished" in httpx.get(f"{server.url}/api/v1/jobs/{job_id}/log").text, timeout=30)
    r = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/log")
    assert r.headers["content-type"].startswith("text/plain")
    assert "attachment" in r.headers["content-disposition"]

    r = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/files/model.json")
    assert r.status_code == 200 and '"w"' in r.text

    wait_until(lambda: httpx.get(f"{server.url}/api/v1/jobs/{job_id}/results.zip").status_code == 200)
    zf = zipfile.ZipFile(io.BytesIO(httpx.get(f"{server.url}/api/v1/jobs/{job_id}/results.zip").content))
    assert {"model.json", "metrics.json"} <= set(zf.namelist())


def test_paths_outside_the_job_are_not_found(server):
    job_id = submit_example(server)
    for path in ["..%2Fjob.log", "..%2F..%2Fportal.db", "%2Fetc%2Fpasswd", "nope.txt", "output%2F..%2F..%2Fjob.log"]:
        r = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/files/{path}")
        # Refused either by the server's own path check (400) or by the portal's confinement (404).
        assert r.status_code in (400, 404), path
        assert "Epoch" not in r.text and "SQLite" not in r.text and "root:" not in r.text
    r = httpx.get(f"{server.url}/api/v1/jobs/999/log")
    assert r.status_code == 404 and r.json() == {"error": "Job 999 was not found."}
    assert httpx.get(f"{server.url}/api/v1/jobs/abc/log").status_code == 404


def test_pages_are_served_including_deep_links(server):
    for path in ["/", "/submit", "/history", "/job?id=1"]:
        assert httpx.get(f"{server.url}{path}").status_code == 200
