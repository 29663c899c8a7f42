"""With several users each has a private workspace: B never lists, downloads or runs A's scripts; the admin's
examples are shared read-only; a job of A's is cloned by B with the snapshot it ran, copied into B's folder."""

from __future__ import annotations

import httpx
import pytest

from services.config import Settings
from services.models import NotFound, Role, User, ValidationProblem
from services.portal import build_portal
from tests.conftest import PortalServer, create_token, run_to_end, sandbox_python, sandbox_skip_reason

pytestmark = pytest.mark.skipif(bool(sandbox_skip_reason()), reason=sandbox_skip_reason() or "")
ALICE, BOB = User("alice"), User("bob")
ADMIN = User("root-admin", Role.ADMIN)
SCRIPT = b"print('alice private v1')\n"


@pytest.fixture
def shared_portal(open_tmp_path):
    portal = build_portal(Settings(data_dir=open_tmp_path / "data", auth_mode="proxy", backend="local",
                                   python_executable=sandbox_python(), admins=["root-admin"]))
    yield portal
    portal.close()


def test_scripts_are_private_and_the_examples_shared(shared_portal):
    jobs = shared_portal.jobs
    mine = jobs.workspace.save_upload(ALICE, "secret_model.py", SCRIPT)
    assert mine in jobs.scripts(ALICE) and "train_example.py" in jobs.scripts(ALICE)
    assert mine not in jobs.scripts(BOB) and "train_example.py" in jobs.scripts(BOB)
    assert mine not in jobs.scripts(ADMIN), "an admin manages jobs, not the contents of others' folders"
    assert not [f for f in jobs.workspace.files(BOB) if "secret_model" in f.path]
    with pytest.raises(ValidationProblem) as refused:
        jobs.submit(BOB, {"name": "steal", "script": mine, "epochs": 1})
    assert "not in your workspace" in refused.value.problems["script"]
    # Nor by another spelling of her folder: the check is on the path as resolved.
    alices = jobs.workspace.own_dir(ALICE).relative_to(jobs.workspace.root).as_posix()
    for spelling in (f"./{alices}/{mine}", f"{alices}/{mine}", f"x/../{alices}/{mine}", f"./{mine}", "./users"):
        with pytest.raises(FileNotFoundError):
            jobs.workspace.resolve(BOB, spelling)
    # Bob's own upload of the same name is his, and does not touch Alice's.
    assert jobs.workspace.save_upload(BOB, "secret_model.py", b"print('bob')\n") == mine
    assert jobs.workspace.resolve(ALICE, mine).read_bytes() == SCRIPT


def test_a_clone_by_another_user_runs_the_snapshot_copied_into_their_workspace(shared_portal):
    jobs = shared_portal.jobs
    script = jobs.workspace.save_upload(ALICE, "train_private.py", SCRIPT)
    job_id = jobs.submit(ALICE, {"name": "a", "script": script, "epochs": 1})
    run_to_end(shared_portal, ALICE, job_id)
    # Alice edits her file afterwards: a clone still runs what the job ran.
    jobs.workspace.resolve(ALICE, script).write_bytes(b"print('alice v2')\n")
    values = jobs.clone_values(BOB, job_id)
    assert values["script"] == f"cloned/job{job_id}-train_private.py"
    assert jobs.workspace.resolve(BOB, values["script"]).read_bytes() == SCRIPT
    clone = jobs.submit(BOB, values, parent_id=job_id)
    assert "alice private v1" in "\n".join(jobs.log_tail(run_to_end(shared_portal, BOB, clone).id))
    # Her own clone keeps using her (edited) workspace file, as before.
    assert jobs.clone_values(ALICE, job_id)["script"] == script
    # An admin's retry of her job runs the snapshot too, from the admin's own folder.
    retried = jobs.retry(ADMIN, job_id)
    assert jobs.get(ADMIN, retried).request["script"] == f"cloned/job{job_id}-train_private.py"


def test_a_clone_whose_snapshot_is_gone_says_so(shared_portal):
    jobs = shared_portal.jobs
    job_id = jobs.submit(ALICE, {"name": "a", "script": "train_example.py", "epochs": 1,
                                 "extra_args": "--seconds-per-epoch 0"})
    run_to_end(shared_portal, ALICE, job_id)
    (shared_portal.settings.jobs_dir / str(job_id) / "script" / "train_example.py").unlink()
    with pytest.raises(NotFound, match="no longer kept"):
        jobs.clone_values(BOB, job_id)


def test_the_api_and_the_client_see_only_ones_own_files(open_tmp_path):
    from ml_job_portal import JobClient, PortalError

    env = {"PORTAL_AUTH_MODE": "proxy", "PORTAL_PYTHON_EXECUTABLE": sandbox_python()}
    server = PortalServer(open_tmp_path / "portal-data", env=env).start()
    try:
        alice = JobClient(server.url, create_token(server.data_dir, "alice"))
        bob_token = create_token(server.data_dir, "bob")
        bob = JobClient(server.url, bob_token)
        (open_tmp_path / "secret_model.py").write_bytes(SCRIPT)
        script = alice.upload_script(open_tmp_path / "secret_model.py")
        assert script in [f["path"] for f in alice.workspace_files()]
        bobs = [f["path"] for f in bob.workspace_files()]
        assert script not in bobs and "train_example.py" in bobs
        with pytest.raises(PortalError) as missing:
            bob.download_workspace_file(script, open_tmp_path / "stolen.py")
        assert "No such file in your workspace" in str(missing.value)
        folder = next(p.name for p in (server.data_dir / "workspace" / "users").iterdir() if p.name.startswith("alice"))
        for spelling in (f"./users/{folder}/{script}", f"%2E/users/{folder}/{script}", f"./{script}"):
            sneaky = httpx.get(f"{server.url}/api/v1/files/{spelling}",
                               headers={"Authorization": f"Bearer {bob_token}"})
            assert sneaky.status_code == 404 and SCRIPT not in sneaky.content, spelling
            run = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {bob_token}"},
                             json={"name": "steal", "script": spelling.replace("%2E", "."), "epochs": 1})
            assert run.status_code == 422, (spelling, run.text)
        refused = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {bob_token}"},
                             json={"name": "steal", "script": script, "epochs": 1})
        assert refused.status_code == 422 and "not in your workspace" in refused.json()["problems"]["script"]
    finally:
        server.stop()
