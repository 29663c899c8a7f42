"""The admin's job template: rendered in a sandbox, user values stay scalars, forbidden fields refused."""

import json
import re
from pathlib import Path

import httpx
import pytest

from services.backends.base import BackendError
from services.backends.k8s_manifests import build_job
from services.backends.k8s_template import apply_template, render
from services.config import Settings
from services.models import JobRequest, JobStatus, User
from services.portal import build_portal
from tests.conftest import PortalServer, create_token

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
    with pytest.raises(BackendError, match="The job template failed at line 1: 'nope' is undefined"):
        render("metadata: {labels: {a: {{ nope }}}}", {})
    with pytest.raises(BackendError, match="The job template failed at line 1: access to attribute '__class__'"):
        render("metadata: {labels: {a: {{ ''.__class__.__mro__ }}}}", {})


def test_data_volume_replaces_configmap_and_empty_dir(tmp_path):
    settings = Settings(data_dir=tmp_path, job_data_volume_claim="portal-data")
    req = JobRequest(name="exp", script="train.py", extra_args="--tag $(HOME) $$x")
    job = build_job(settings, job_id=7, owner="alice", submission_id="s", request=req,
                    script_file="train.py", configmap="unused")
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "data", "persistentVolumeClaim": {"claimName": "portal-data"}}
    assert [v["name"] for v in pod["volumes"]] == ["data", "podinfo"]  # podinfo: the pod's own annotations
    ctr = pod["containers"][0]
    assert ctr["args"][0] == "/portal/data/jobs/7/script/train.py"
    assert ctr["workingDir"] == "/portal/data/jobs/7/output"
    # Only the job's own directory of the volume: never the database, the signing key or others' jobs.
    # The script read-only and the output: never the job folder, where the portal keeps this job's log archive.
    assert ctr["volumeMounts"] == [
        {"name": "data", "mountPath": "/portal/data/jobs/7/script", "subPath": "jobs/7/script", "readOnly": True},
        {"name": "data", "mountPath": "/portal/data/jobs/7/output", "subPath": "jobs/7/output"},
        {"name": "podinfo", "mountPath": "/portal/podinfo", "readOnly": True}]
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


# Injection: what users type reaches the script as typed, whatever the template does with it ------------------------
INJECTING = """
metadata:
  annotations:
    team/experiment: {{ experiment }}
    team/dataset: {{ dataset_path }}
spec:
  template:
    spec:
      containers:
      - env:
        - name: DATASET
          value: {{ dataset_path }}
        - name: RUN_NAME
          value: {{ experiment }}
        - name: CACHE_DIR
          value: "$(PORTAL_OUTPUT_DIR)/cache"
"""
CLUSTER_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}  # the kubelet gives every container this one


def kubelet_expands(value: str, env: dict[str, str]) -> str:
    """Kubernetes' documented rule for env values, command and args: $(VAR) becomes VAR's value when VAR is
    defined (earlier in the list, or by the cluster), $$ is a literal $, anything else stays as it is."""
    return re.sub(r"\$(\$|\(([^)]*)\))",
                  lambda m: "$" if m.group(1) == "$" else env.get(m.group(2), m.group(0)), value)


def container_sees(ctr: dict) -> tuple[dict[str, str], list[str]]:
    env = dict(CLUSTER_ENV)
    for e in ctr["env"]:
        if "value" in e:
            env[e["name"]] = kubelet_expands(e["value"], env)
    return env, [kubelet_expands(a, env) for a in ctr["args"]]


@pytest.mark.parametrize("typed", [
    "$(HOME)", "$(KUBERNETES_SERVICE_HOST)", "$$(HOME) and $x", "{{ 7*7 }}", "{% for i in range(3) %}x{% endfor %}",
    '/d"\nprivileged: true\n- [', "a: {b: c}", "'; securityContext: {privileged: true} #", "run-$(PORTAL_JOB_ID)",
])
def test_typed_values_reach_the_script_as_typed_and_the_admins_references_still_expand(tmp_path, typed):
    # Validation refuses most of these in a name; the template must hold even if one got past it.
    req = JobRequest.model_construct(**(JobRequest(name="exp", script="train.py").model_dump()
                                        | {"name": typed, "dataset_path": typed,
                                           "extra_args": "--note $(HOME) $(KUBERNETES_SERVICE_HOST)"}))
    base, _ = manifest(tmp_path, req)
    path = tmp_path / "job.yaml"
    path.write_text(INJECTING)
    out = apply_template(str(path), base, req.model_dump(mode="json") | {"experiment": req.name})
    ann = out["metadata"]["annotations"]
    assert ann["team/dataset"] == typed and ann["team/experiment"] == typed  # annotations are not expanded
    env, args = container_sees(out["spec"]["template"]["spec"]["containers"][0])
    assert env["DATASET"] == typed and env["RUN_NAME"] == typed
    assert env["PORTAL_DATASET_PATH"] == typed and env["PORTAL_EXPERIMENT"] == typed
    assert env["CACHE_DIR"] == "/portal/output/cache"  # the admin's own $(VAR) is the admin's to use
    assert args[-3:] == ["--note", "$(HOME)", "$(KUBERNETES_SERVICE_HOST)"]


def test_emoji_in_a_value_stays_one_character(tmp_path):
    base, req = manifest(tmp_path, JobRequest(name="exp", script="train.py", dataset_path="/data/🦜 $(X)"))
    out = apply_template(_template(tmp_path, INJECTING), base, req.model_dump(mode="json") | {"experiment": "e"})
    assert out["metadata"]["annotations"]["team/dataset"] == "/data/🦜 $(X)"


def _template(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def test_a_template_cannot_overwrite_the_portals_own_labels_and_annotations(tmp_path):
    grab = {"app.kubernetes.io/managed-by": "helm", "ml-portal/job-id": "999", "ml-portal/owner-hash": "mallory"}
    claim = {"ml-portal/owner": "mallory", "ml-portal/experiment": "other", "ml-portal/submission-id": "forged"}
    text = json.dumps({"metadata": {"labels": grab | {"team/cost": "nlp"}, "annotations": claim},
                       "spec": {"template": {"metadata": {"labels": grab, "annotations": claim | {"team/x": "y"}}}}})
    base, _ = manifest(tmp_path)
    out = apply_template(_template(tmp_path, text), base, {})
    meta, pod = out["metadata"], out["spec"]["template"]["metadata"]
    own_labels = {"app.kubernetes.io/managed-by": "ml-job-portal", "ml-portal/job-id": "7",
                  "ml-portal/owner-hash": base["metadata"]["labels"]["ml-portal/owner-hash"]}
    own_annotations = {"ml-portal/owner": "alice", "ml-portal/experiment": "exp", "ml-portal/submission-id": "s"}
    assert meta["labels"] == own_labels | {"team/cost": "nlp"}  # the portal still finds the Job, and whose it is
    assert meta["annotations"] == own_annotations
    assert pod["labels"] == own_labels
    assert pod["annotations"] == own_annotations | {"team/x": "y"}


# A template that fails: a sentence at Submit, never a traceback ------------------------------------------------
FAILING = [
    ("metadata:\n  labels:\n{% for i in range(10**9) %}    a{{ i }}: x\n{% endfor %}",
     "The job template failed at line 3: Range too big"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
     "The job template failed at line 1: its loops take more than 100,000 steps in all."),
    ("metadata:\n  annotations:\n    a: {{ '%d' | format(experiment) }}\n",
     "The job template failed at line 3: %d format: a real number is required, not str."),
    ("metadata:\n  annotations:\n    a: {{ dataset }}\n", "The job template failed at line 3: 'dataset' is undefined."),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "The job template failed at line 1: it calls itself"),
    ("metadata: {{ experiment ", "The job template failed at line 1: unexpected end of template"),
    ("{% for i in range(99999) %}# a comment line that goes on and on\n{% endfor %}",
     "The job template failed: it renders more than 256 KB."),
    ("metadata:\n  annotations: {{ 'x' * 10**9 }}\n", "The job template failed at line 2: a text or list in it"),
    ("metadata:\n  annotations:\n    a: {{ experiment }}: x\n",
     "The job template does not render valid YAML at line 3: mapping values are not allowed here."),
]


@pytest.fixture
def k8s_without_cluster(tmp_path):
    """The kubernetes backend with a cluster that never answers: a template refusal comes before any call to it."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return {"backend": "kubernetes", "kubeconfig": str(kubeconfig), "job_template": str(tmp_path / "job.yaml"),
            "kube_request_timeout_seconds": 2}


def test_a_failing_template_is_a_sentence_on_the_job(tmp_path, k8s_without_cluster):
    portal = build_portal(Settings(data_dir=tmp_path / "data", **k8s_without_cluster))
    me = User(name="alice")
    try:
        for i, (text, sentence) in enumerate(FAILING):
            Path(k8s_without_cluster["job_template"]).write_text(text)
            job = portal.jobs.get(me, portal.jobs.submit(me, {"name": f"t{i}", "script": "train_example.py",
                                                              "dataset_path": "/data/[x](http://phish.example)"}))
            assert job.status is JobStatus.SUBMIT_FAILED
            assert job.reason.startswith(sentence), (text, job.reason)
            assert "phish" not in job.reason  # what a user typed is not echoed into someone's error
    finally:
        portal.close()


def test_the_api_answers_a_failing_template_with_the_sentence(tmp_path, k8s_without_cluster):
    Path(k8s_without_cluster["job_template"]).write_text(FAILING[0][0])
    env = {f"PORTAL_{k.upper()}": str(v) for k, v in k8s_without_cluster.items()}
    server = PortalServer(tmp_path / "portal-data", env=env).start()
    try:
        token = create_token(server.data_dir, "alice")
        r = httpx.post(f"{server.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "api-range", "script": "train_example.py"}, timeout=30)
        body = r.json()
        assert body["status"] == JobStatus.SUBMIT_FAILED.value
        assert body["reason"].startswith("The job template failed at line 3: Range too big")
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
