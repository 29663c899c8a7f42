"""The deployment manifests on the real control plane: every overlay is accepted by the apiserver, the
portal's ServiceAccount can do exactly what its Role says, and the portal running with only that account's
token takes jobs through their whole life in a namespace that enforces Pod Security "restricted"."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from services.backends.k8s_manifests import CHECKPOINT_REQUEST
from services.checkpoints import CheckpointService
from services.models import JobStatus, User
from services.portal import build_portal
from tests.conftest import ROOT, wait_until
from tests.k8s.conftest import Cluster, k8s_settings, render_manifests
from tests.k8s.test_kubernetes_backend import finished, until
from tests.test_deploy_manifests import role_permissions

ALICE = User(name="alice")


@pytest.mark.parametrize("overlay,components", [
    ("overlays/openshift", ()),
    ("overlays/kubernetes", ()),
    ("overlays/openshift", ("components/namespace-guardrails",)),
    ("overlays/kubernetes", ("components/namespace-guardrails",)),
    ("overlays/openshift", ("components/replicas",)),
    ("overlays/kubernetes", ("components/replicas",)),
])
def test_overlay_renders_and_passes_a_server_side_dry_run(cluster: Cluster, namespace: str, tmp_path: Path,
                                                          overlay: str, components: tuple[str, ...]) -> None:
    rendered = render_manifests(cluster, tmp_path / "k", overlay, namespace, components)
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
            "PersistentVolumeClaim"} <= kinds
    assert ("Route" if "openshift" in overlay else "Ingress") in kinds
    if "components/namespace-guardrails" in components:
        assert {"Namespace", "ResourceQuota", "LimitRange"} <= kinds
    if "components/replicas" in components:
        assert_two_sticky_replicas(docs, "openshift" in overlay)
    assert all(d["metadata"].get("namespace", namespace) == namespace for d in docs)
    out = cluster.kubectl("apply", "--dry-run=server", "-f", str(rendered))
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(docs) and all("(server dry run)" in line for line in lines), out


def assert_two_sticky_replicas(docs: list[dict], openshift: bool) -> None:
    """Two replicas on PostgreSQL that elect a leader, a browser kept on one of them, and a drain that takes one."""
    one = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = one["Deployment", "ml-portal"]
    assert deployment["spec"]["replicas"] == 2 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    portal = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "portal")
    env = {e["name"]: e.get("valueFrom", e.get("value")) for e in portal["env"]}
    assert env["PORTAL_DATABASE_URL"] == {"secretKeyRef": {"name": "ml-portal-database", "key": "url"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("ml-portal-config"))
    assert config["data"]["PORTAL_LEADER_ELECTION"] == "on"
    assert one["Service", "ml-portal"]["spec"]["sessionAffinity"] == "ClientIP"
    assert one["PersistentVolumeClaim", "ml-portal-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pdb = one["PodDisruptionBudget", "ml-portal"]["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"] == deployment["spec"]["selector"]
    front = one["Route" if openshift else "Ingress", "ml-portal"]["metadata"]["annotations"]
    cookie = "router.openshift.io/cookie_name" if openshift else "nginx.ingress.kubernetes.io/session-cookie-name"
    assert front[cookie] == "ml-portal-replica"
    if not openshift:
        assert front["nginx.ingress.kubernetes.io/affinity"] == "cookie"
        assert front["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600", "the overlay's own annotations stay"


def can_i_list(cluster: Cluster, namespace: str, account: str) -> set[tuple[str, str, str]]:
    out = cluster.kubectl("auth", "can-i", "--list", "-n", namespace,
                          f"--as=system:serviceaccount:{namespace}:{account}")
    granted: set[tuple[str, str, str]] = set()
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]", line)
        if not match or not match.group(1) or match.group(2):
            continue  # non-resource URLs
        # "pods/log", "localqueues.visibility.kueue.x-k8s.io/pendingworkloads": the subresource comes last
        qualified, _, sub = match.group(1).partition("/")
        resource, _, group = qualified.partition(".")
        name = f"{resource}/{sub}" if sub else resource
        granted |= {(group, name, verb) for verb in match.group(4).split()}
    return granted


def test_the_service_account_may_do_exactly_what_is_documented(cluster: Cluster, namespace: str,
                                                               deployed: Path) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "bare")
    extra = can_i_list(cluster, namespace, "ml-portal") - can_i_list(cluster, namespace, "bare")
    assert extra == role_permissions()
    for forbidden in (["create", "pods/exec"], ["get", "secrets"], ["create", "rolebindings"], ["create", "pods"],
                      ["list", "jobs.batch", "-n", "default"], ["list", "nodes"]):
        verb, resource, *ns = forbidden
        answer = cluster.kubectl("auth", "can-i", verb, resource, *(ns or ["-n", namespace]),
                                 f"--as=system:serviceaccount:{namespace}:ml-portal", check=False).strip()
        assert answer == "no", f"the portal may {verb} {resource}"


def test_portal_with_only_its_service_account_token_runs_jobs(cluster: Cluster, namespace: str, deployed: Path,
                                                              tmp_path: Path) -> None:
    template = ROOT / "manifests" / "base" / "job-template.yaml"
    settings = k8s_settings(cluster, namespace, tmp_path / "data", kubeconfig=str(deployed),
                            job_service_account="ml-portal-job", job_template=str(template),
                            pod_annotations={"kwok.test/runtime": "3s"})
    portal = build_portal(settings)
    try:
        one = portal.jobs.submit(ALICE, {"name": "sa-single", "gpus": 1, "script": "train_example.py", "epochs": 3})
        job = finished(portal, one)
        assert job.status is JobStatus.SUCCEEDED, job.reason
        assert any("Training finished" in line for line in portal.jobs.log_tail(one)), "pods/log was readable"
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"ml-portal/job-id={one}",
                                          "-o", "json"))["items"]
        assert pods, "the job's pod passed Pod Security 'restricted' admission"
        spec = pods[0]["spec"]
        assert spec["serviceAccountName"] == "ml-portal-job" and spec["automountServiceAccountToken"] is False
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]

        portal.settings.pod_annotations = {"kwok.test/outcome": "hang"}
        two = portal.jobs.submit(ALICE, {"name": "sa-multi", "gpus": 2, "nodes": 2, "script": "train_example.py"})
        until(portal, two, lambda j: j.status is JobStatus.RUNNING)
        assert cluster.kubectl("-n", namespace, "get", "service", f"mlp-{two}", "-o", "name").strip()
        # Save checkpoint with the Role's pods patch alone: each running pod of the job carries the request.
        wait_until(lambda: json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"ml-portal/job-id={two}",
                                                      "-o", "json"))["items"][-1]["status"].get("phase") == "Running",
                   timeout=30)
        assert CheckpointService(portal.jobs).request(ALICE, two).delivered_at is not None
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"ml-portal/job-id={two}",
                                          "-o", "json"))["items"]
        assert len(pods) == 2 and all(CHECKPOINT_REQUEST in p["metadata"]["annotations"] for p in pods)
        portal.jobs.stop(ALICE, two)
        assert finished(portal, two).status is JobStatus.STOPPED
        portal.jobs.delete(ALICE, one)
        assert portal.jobs.backend.health() is None, portal.jobs.backend.health()
    finally:
        portal.close()


def test_restricted_namespace_refuses_a_pod_without_the_portals_security_settings(cluster: Cluster, namespace: str,
                                                                                 deployed: Path) -> None:
    # The control: this namespace turns away a pod that is not "restricted", so the jobs above passed it.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "loose"},
           "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}
    path = deployed.parent / "loose.json"
    path.write_text(json.dumps(pod))
    out = subprocess.run([str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
                          "create", "--dry-run=server", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "violates PodSecurity \"restricted" in out.stderr, out.stderr
