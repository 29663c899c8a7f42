"""The Job a cluster job runs as: its pod projects its own annotations (Downward API) for the launcher that runs
the script, and a retry from a checkpoint mounts that one checkpoint read-only (no user string in the YAML)."""

from __future__ import annotations

from services.backends.k8s_manifests import build_job
from services.config import Settings
from services.models import JobRequest


def _pod(tmp_path, **values) -> dict:
    settings = Settings(data_dir=tmp_path, job_data_volume_claim="portal-data")
    req = JobRequest(name="exp", script="train.py", **values)
    job = build_job(settings, job_id=9, owner="alice", submission_id="s", request=req, script_file="train.py",
                    configmap="unused")
    return job["spec"]["template"]["spec"]


def test_the_script_runs_under_the_launcher_watching_the_pods_annotations(tmp_path) -> None:
    pod = _pod(tmp_path)
    assert {"name": "podinfo", "downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}} in pod["volumes"]
    ctr = pod["containers"][0]
    assert ctr["command"] == ["python", "-u", "/portal/data/jobs/9/script/portal_launch.py", "--watch",
                              "/portal/podinfo/annotations", "--", "python", "-u"]
    assert ctr["args"][0] == "/portal/data/jobs/9/script/train.py"
    multi = _pod(tmp_path, nodes=2)["containers"][0]["command"]
    assert "--spare-leader" in multi and multi[multi.index("--") + 1] == "torchrun"


def test_a_retry_from_a_checkpoint_mounts_only_that_checkpoint_read_only(tmp_path) -> None:
    ctr = _pod(tmp_path, resume_from="4/epoch $(HOME)")["containers"][0]
    assert {"name": "data", "mountPath": "/portal/resume/epoch $(HOME)", "readOnly": True,
            "subPath": "jobs/4/output/checkpoints/epoch $(HOME)"} in ctr["volumeMounts"]
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env["PORTAL_RESUME_FROM"] == "/portal/resume/epoch $$(HOME)"  # Kubernetes would expand $(HOME)
    assert ctr["args"][ctr["args"].index("--resume-from") + 1] == "/portal/resume/epoch $$(HOME)"
