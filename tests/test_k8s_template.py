"""The admin's job template: rendered in a sandbox, user values stay scalars, forbidden fields refused."""

import pytest

from services.backends.base import BackendError
from services.backends.k8s_manifests import build_job
from services.backends.k8s_template import apply_template, render
from services.config import Settings
from services.models import JobRequest

TEMPLATE = """
apiVersion: batch/v1
kind: Job
metadata:
  annotations:
    team/experiment: {{ experiment }}
    team/dataset: {{ dataset_path }}
spec:
  template:
    spec:
      nodeSelector:
        gpu-type: h100
      containers:
      - image: registry.example/ml/train:2.4
        env:
        - name: DATASET
          value: {{ dataset_path }}
"""


def manifest(tmp_path, request=None):
    req = request or JobRequest(name="exp", script="train.py")
    settings = Settings(data_dir=tmp_path)
    return build_job(settings, job_id=7, owner="alice", submission_id="s", request=req,
                     script_file="train.py", configmap="mlp-7-script"), req


def test_allowed_fields_are_applied_and_user_text_stays_a_scalar(tmp_path):
    # Validation already refuses newlines; the template must hold even if a value got past it.
    evil = JobRequest.model_construct(**(JobRequest(name="exp", script="train.py").model_dump()
                                         | {"dataset_path": '/d"\nprivileged: true\n{{ 7*7 }}'}))
    base, req = manifest(tmp_path, evil)
    path = tmp_path / "job.yaml"
    path.write_text(TEMPLATE)
    out = apply_template(str(path), base, req.model_dump(mode="json") | {"experiment": req.name})
    ann = out["metadata"]["annotations"]
    assert ann["team/dataset"] == '/d"\nprivileged: true\n{{ 7*7 }}'  # one string, nothing injected
    assert ann["ml-portal/owner"] == "alice"  # the portal's own annotations stay
    pod = out["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu-type": "h100"}
    ctr = pod["containers"][0]
    assert ctr["image"] == "registry.example/ml/train:2.4"
    assert {"name": "DATASET", "value": req.dataset_path} in ctr["env"]
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False  # untouched


@pytest.mark.parametrize(("snippet", "field"), [
    ("spec: {template: {spec: {containers: [{securityContext: {privileged: true}}]}}}",
     "spec.template.spec.containers[0].securityContext.privileged"),
    ("spec: {template: {spec: {hostNetwork: true}}}", "spec.template.spec.hostNetwork"),
    ("spec: {template: {spec: {serviceAccountName: admin}}}", "spec.template.spec.serviceAccountName"),
    ("spec: {template: {spec: {volumes: [{name: h, hostPath: {path: /}}]}}}", "spec.template.spec.volumes[0].name"),
    ("spec: {template: {spec: {containers: [{command: [sh, -c, x]}]}}}",
     "spec.template.spec.containers[0].command[0]"),
    ("spec: {template: {spec: {containers: [{env: [{name: T, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]}}}",
     "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name"),
])
def test_forbidden_fields_are_refused_by_name(snippet, field):
    with pytest.raises(BackendError) as exc:
        render(snippet, {})
    assert field in str(exc.value)


def test_undefined_values_and_sandbox_escapes_are_errors():
    with pytest.raises(BackendError, match="cannot be used"):
        render("metadata: {labels: {a: {{ nope }}}}", {})
    with pytest.raises(BackendError, match="cannot be used"):
        render("metadata: {labels: {a: {{ ''.__class__.__mro__ }}}}", {})


def test_data_volume_replaces_configmap_and_empty_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, job_data_volume_claim="portal-data")
    req = JobRequest(name="exp", script="train.py", extra_args="--tag $(HOME) $$x")
    job = build_job(settings, job_id=7, owner="alice", submission_id="s", request=req,
                    script_file="train.py", configmap="unused")
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "portal-data"}}]
    ctr = pod["containers"][0]
    assert ctr["args"][0] == "/portal/data/jobs/7/script/train.py"
    assert ctr["workingDir"] == "/portal/data/jobs/7/output"
    # Only the job's own directory of the volume: never the database, the signing key or others' jobs.
    assert ctr["volumeMounts"] == [{"name": "data", "mountPath": "/portal/data/jobs/7", "subPath": "jobs/7"}]
    # Kubernetes would expand $(HOME): the user's text is escaped so it arrives as typed.
    assert ctr["args"][-3:] == ["--tag", "$$(HOME)", "$$$$x"]


def test_job_uid_is_fixed_by_default_and_left_to_openshift_when_zero(tmp_path):
    req = JobRequest(name="exp", script="train.py")

    def pod_security(**values):
        job = build_job(Settings(data_dir=tmp_path, **values), job_id=1, owner="a", submission_id="s", request=req,
                        script_file="train.py", configmap="c")
        return job["spec"]["template"]["spec"]["securityContext"]

    assert pod_security()["runAsUser"] == 1000 and pod_security()["fsGroup"] == 1000
    openshift = pod_security(job_run_as_user=0)
    assert "runAsUser" not in openshift and "fsGroup" not in openshift and openshift["runAsNonRoot"] is True
