"""Issue 21, TensorBoard behind the portal: a real TensorBoard, started by the portal for a real job's event files,
answers through the portal's own address (/tensorboard/<ids>/) for who may read the job's files, and is refused
to anyone else: 401 without a sign-in, 404 for a user who may not read the job."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PortalServer, create_token, sandbox_python, sandbox_skip_reason, wait_until
from tests.tb_writer import site_for_sandboxed_jobs, tb_script


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_tb_job(srv: PortalServer, token: str, name: str = "tb-only") -> int:
    r = httpx.post(f"{srv.url}/api/v1/jobs", headers=bearer(token),
                   json={"name": name, "script": "tb_only.py", "epochs": 1})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def done() -> bool:
        job = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=bearer(token)).json()
        assert job["status"] != "Failed", job
        return job["finished"]

    wait_until(done, timeout=60, interval=0.3)
    return job_id


def start(tmp_path, env: dict[str, str]) -> PortalServer:
    data = tmp_path / "portal-data"
    (data / "workspace").mkdir(parents=True)
    site = site_for_sandboxed_jobs(tmp_path / "site") if "PORTAL_PYTHON_EXECUTABLE" in env else None
    (data / "workspace" / "tb_only.py").write_text(tb_script(steps=5, site=site))
    return PortalServer(data, env=env).start()


def test_the_owner_opens_tensorboard_through_the_portal_with_its_runs_and_policy(tmp_path):
    srv = start(tmp_path, {})
    try:
        token = create_token(srv.data_dir, "me")
        job_id = run_tb_job(srv, token)
        # The running portal's own worker read the event files: the job's curves, through the API too.
        series = wait_until(lambda: httpx.get(f"{srv.url}/api/v1/jobs/{job_id}/metrics",
                                              headers=bearer(token)).json()["series"].get("loss"), timeout=30)
        assert series["x"] == [0, 10, 20, 30, 40]
        base = f"{srv.url}/tensorboard/{job_id}"
        r = httpx.get(base)  # single mode: whoever reaches the loopback portal is its one user
        assert r.status_code == 307 and r.headers["location"] == f"/tensorboard/{job_id}/"
        listing = httpx.get(f"{base}/data/plugins_listing", timeout=60)
        assert listing.status_code == 200, listing.text
        assert listing.json()["scalars"]["enabled"] is True, "the job's scalars are there to draw"
        runs = wait_until(lambda: httpx.get(f"{base}/data/runs").json(), timeout=30)
        assert sorted(runs) == [f"{job_id}-tb-only/runs/train", f"{job_id}-tb-only/runs/val"]
        scalars = httpx.get(f"{base}/data/plugin/scalars/scalars",
                            params={"run": f"{job_id}-tb-only/runs/train", "tag": "loss"}).json()
        assert [step for _, step, _ in scalars] == [0, 10, 20, 30, 40]
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "<tb-webapp>" in page.text, page.text[:300]
        csp = page.headers["content-security-policy"]
        script_src = next(d for d in csp.split("; ") if d.startswith("script-src"))
        assert "'unsafe-eval'" in script_src and "'unsafe-inline'" not in script_src, "still no inline script"
        assert "frame-ancestors 'self'" in csp and page.headers["x-frame-options"] == "SAMEORIGIN"
        assert len(page.headers.get_list("content-security-policy")) == 1, "the portal's policy, not TensorBoard's"
        home = httpx.get(srv.url)
        assert "'unsafe-eval'" not in home.headers["content-security-policy"], "relaxed for /tensorboard/ only"
        assert httpx.get(f"{srv.url}/tensorboard/{job_id + 1}/").status_code == 404
        assert httpx.get(f"{srv.url}/tensorboard/..%2F..%2Fetc/").status_code in (400, 404)
        assert httpx.get(f"{srv.url}/tensorboard/5-3/").status_code == 404, "a set has one address, sorted"
    finally:
        srv.stop()


@pytest.mark.skipif(sandbox_skip_reason() is not None, reason=str(sandbox_skip_reason()))
def test_behind_the_proxy_only_who_may_read_the_jobs_files_gets_its_tensorboard(open_tmp_path):
    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python(), "PORTAL_VIEWERS": "vera"}
    srv = start(open_tmp_path, env)
    try:
        alice, bob = create_token(srv.data_dir, "alice"), create_token(srv.data_dir, "bob")
        job_id = run_tb_job(srv, alice)
        bobs = run_tb_job(srv, bob, "bobs")
        url = f"{srv.url}/tensorboard/{job_id}/data/plugins_listing"

        def as_user(name: str | None, where: str = url) -> httpx.Response:
            return httpx.get(where, headers={"X-Forwarded-User": name} if name else {}, timeout=60)

        assert as_user("alice").status_code == 200 and "scalars" in as_user("alice").json()
        assert as_user("vera").status_code == 200, "a viewer reads every job"
        refused = as_user("bob")  # sees the job read-only, may not read its files
        assert refused.status_code == 404 and "not found" in refused.text
        anonymous = as_user(None)
        assert anonymous.status_code == 401 and "Sign in" in anonymous.text
        both = f"{srv.url}/tensorboard/{min(job_id, bobs)}-{max(job_id, bobs)}/data/plugins_listing"
        assert as_user("alice", both).status_code == 404, "a set is refused whole"
        # Checked on every request, not only when it started: a token is no way in either.
        assert httpx.get(url, headers=bearer(bob)).status_code == 401
    finally:
        srv.stop()
