"""The deployment manifests without a cluster: the portal's Role is exactly what its code calls, the docs say
the same, and the rendered Deployment keeps its security promises. (On the control plane: tests/k8s/.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.config import Settings
from tests.conftest import ROOT

MANIFESTS = ROOT / "manifests"
BACKEND = ROOT / "services" / "backends" / "kubernetes.py"  # and its k8s_*.py modules (logs, watch, ...)
LEADER = ROOT / "services" / "leader.py"  # the replicas' Lease
GROUP_OF_API = {"batch": "batch", "core": "", "coordination": "coordination.k8s.io"}
VERB = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}
PLURAL = {"job": "jobs", "pod": "pods", "config_map": "configmaps", "service": "services", "pod_log": "pods/log",
          "event": "events", "secret": "secrets", "pod_exec": "pods/exec", "lease": "leases"}

Permission = tuple[str, str, str]  # (api group, resource, verb)


def permissions_the_code_uses() -> set[Permission]:
    """Every Kubernetes API call in the backend, from its source: `self.batch.create_namespaced_job` is
    (batch, jobs, create); a list function handed to a WatchCache is also watched."""
    source = "\n".join(p.read_text() for p in [BACKEND, *sorted(BACKEND.parent.glob("k8s_*.py")), LEADER])
    used: set[Permission] = set()
    for api, action, kind in re.findall(r"self\.(batch|core|coordination)\.(\w+?)_namespaced_(\w+)", source):
        used.add((GROUP_OF_API[api], PLURAL[kind], VERB[action]))
    for action in re.findall(r"self\.core\.(\w+?)_node\(", source):  # cluster-scoped (k8s_gpu_types.py)
        used.add(("", "nodes", VERB[action]))
    for api, kind in re.findall(r"WatchCache\(\s*\w+,\s*self\.(batch|core)\.list_namespaced_(\w+)", source):
        used.add(("batch" if api == "batch" else "", PLURAL[kind], "watch"))
    assert "watch=True" in source, "the WatchCache no longer watches: update this derivation"
    # Kueue's objects (k8s_kueue.py): `self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "workloads"`.
    group = re.search(r'^GROUP = "([^"]+)"', source, re.M)
    for action, plural in re.findall(r'self\.custom\.(\w+?)_(?:namespaced|cluster)_custom_object\(\s*GROUP,\s*VERSION,'
                                     r'\s*(?:self\.namespace,\s*)?"(\w+)"', source):
        used.add((group.group(1) if group else "", plural, VERB.get(action, action)))
    for api_group, resource, sub in re.findall(r'"/apis/([\w.-]+)/\w+/namespaces/\{namespace\}/(\w+)/\{name\}/(\w+)"',
                                              source):
        used.add((api_group, f"{resource}/{sub}", "get"))  # read with call_api(..., "GET")
    return used


def _rules(role: dict) -> set[Permission]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def role_permissions() -> set[Permission]:
    role = yaml.safe_load((MANIFESTS / "base" / "role.yaml").read_text())
    assert role["kind"] == "Role", "the portal's permissions are namespaced"
    return _rules(role)


def kueue_cluster_permissions() -> set[Permission]:
    """The Kueue component's ClusterRole: reads of cluster-scoped Kueue objects only."""
    docs = list(yaml.safe_load_all((MANIFESTS / "components" / "kueue" / "clusterrole.yaml").read_text()))
    return _rules(next(d for d in docs if d["kind"] == "ClusterRole"))


def budget_hold_permissions() -> set[Permission]:
    """The opt-in kueue-budget-hold component's ClusterRole: patch of ClusterQueues only (stopPolicy: Hold)."""
    docs = list(yaml.safe_load_all((MANIFESTS / "components" / "kueue-budget-hold" / "clusterrole.yaml").read_text()))
    return _rules(next(d for d in docs if d["kind"] == "ClusterRole"))


def node_gpu_types_permissions() -> set[Permission]:
    """The opt-in node-gpu-types component's ClusterRole: get of nodes only (their GPU type label)."""
    docs = list(yaml.safe_load_all((MANIFESTS / "components" / "node-gpu-types" / "clusterrole.yaml").read_text()))
    return _rules(next(d for d in docs if d["kind"] == "ClusterRole"))


def documented_permissions() -> set[Permission]:
    rows = re.findall(r"^\| `([^`]*)` \| `([^`]+)` \| ([a-z, ]+) \|", (ROOT / "docs" / "admin.md").read_text(), re.M)
    return {(g, r, v.strip()) for g, r, verbs in rows for v in verbs.split(",")}


def test_the_role_grants_exactly_what_the_code_calls() -> None:
    code = permissions_the_code_uses()
    role = role_permissions() | kueue_cluster_permissions() | budget_hold_permissions() | node_gpu_types_permissions()
    assert budget_hold_permissions() == {("kueue.x-k8s.io", "clusterqueues", "patch")}
    assert node_gpu_types_permissions() == {("", "nodes", "get")}, "one node at a time: no list or watch"
    assert {r for _, r, _ in kueue_cluster_permissions()} <= {"clusterqueues", "workloadpriorityclasses"}
    assert {v for _, _, v in kueue_cluster_permissions()} == {"list"}, "cluster-wide: reads only"
    assert role - code == set(), f"the Role grants what the code never calls: {sorted(role - code)}"
    assert code - role == set(), f"the code calls what the Role does not grant: {sorted(code - role)}"
    forbidden = {r for _, r, _ in role} & {"secrets", "pods/exec", "pods/attach", "roles", "rolebindings"}
    assert not forbidden and all("*" not in p for perm in role for p in perm)


def test_docs_list_the_same_permissions() -> None:
    assert documented_permissions() == (role_permissions() | kueue_cluster_permissions() | budget_hold_permissions()
                                        | node_gpu_types_permissions())


@pytest.mark.parametrize("doc", ["admin.md", "configuration.md"])
def test_docs_name_every_setting_with_its_env_var(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text()
    missing = [f"PORTAL_{name.upper()}" for name in Settings.model_fields if f"`PORTAL_{name.upper()}`" not in text]
    assert not missing, f"docs/{doc} does not describe {missing}"


def rendered_base() -> list[dict]:
    # The base resources as written; kustomize itself runs on the control plane tests.
    docs: list[dict] = []
    kustomization = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((MANIFESTS / "base" / name).read_text()) if d]
    return docs


def by_kind(kind: str, name: str | None = None) -> dict:
    return next(d for d in rendered_base() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def test_the_portal_pod_is_locked_down() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ml-portal" and pod["securityContext"]["runAsNonRoot"] is True
    portal = next(c for c in pod["containers"] if c["name"] == "portal")
    sc = portal["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(portal)
    assert portal["resources"]["limits"]["memory"] and portal["resources"]["requests"]["cpu"]
    mounts = {m["mountPath"] for m in portal["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts, "the data volume and a writable /tmp under a read-only root"
    assert "ports" not in portal, "the portal is reached through the proxy sidecar only"


def test_the_portal_listens_on_loopback_behind_the_proxy() -> None:
    env = dict(line.split("=", 1) for line in (MANIFESTS / "base" / "portal.env").read_text().split())
    assert env["STREAMLIT_SERVER_ADDRESS"] == "127.0.0.1" and env["PORTAL_AUTH_MODE"] == "proxy"
    assert env["PORTAL_JOB_SERVICE_ACCOUNT"] == by_kind("ServiceAccount", "ml-portal-job")["metadata"]["name"]
    assert by_kind("ServiceAccount", "ml-portal-job")["automountServiceAccountToken"] is False
    for overlay in ("openshift", "kubernetes"):
        sidecar = yaml.safe_load((MANIFESTS / "overlays" / overlay / "proxy-sidecar.yaml").read_text())
        proxy = sidecar["spec"]["template"]["spec"]["containers"][0]
        assert "--upstream=http://127.0.0.1:8501" in proxy["args"]
        assert [p["name"] for p in proxy["ports"]] == ["http"], "the Service's targetPort is the proxy"
        image = proxy["image"]
        assert ":" in image and not image.endswith(":latest")
        assert proxy["securityContext"]["readOnlyRootFilesystem"] is True


def test_images_are_pinned() -> None:
    for path in Path(MANIFESTS).rglob("*.yaml"):
        for match in re.findall(r"image: (\S+)", path.read_text()):
            assert match == "ml-portal" or (":" in match and not match.endswith(":latest")), f"{path}: {match}"


def test_the_proxies_let_the_token_api_through_and_nothing_else_but_health() -> None:
    for overlay, flag in (("openshift", "--skip-auth-regex="), ("kubernetes", "--skip-auth-route=")):
        sidecar = yaml.safe_load((MANIFESTS / "overlays" / overlay / "proxy-sidecar.yaml").read_text())
        args = sidecar["spec"]["template"]["spec"]["containers"][0]["args"]
        assert sorted(a.removeprefix(flag) for a in args if a.startswith(flag)) == ["^/api/v1/", "^/healthz$"]


def test_the_monitoring_component_shares_one_token_between_prometheus_and_the_portal() -> None:
    component = MANIFESTS / "components" / "monitoring"
    deployment = yaml.safe_load((component / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in deployment["containers"][0]["env"]}
    assert "metrics_token_file" in Settings.model_fields
    mount = deployment["containers"][0]["volumeMounts"][0]
    secret = next(v["secret"] for v in deployment["volumes"] if v["name"] == mount["name"])
    assert env["PORTAL_METRICS_TOKEN_FILE"] == f"{mount['mountPath']}/token" and mount["readOnly"] is True
    endpoint = yaml.safe_load((component / "servicemonitor.yaml").read_text())["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"  # the Service's port: the proxy's
    assert endpoint["authorization"]["credentials"] == {"name": secret["secretName"], "key": "token"}
    # Each proxy is told to let /metrics alone through without a login, with its own flag.
    for name, flag in (("kubernetes", "--skip-auth-route=^/metrics$"), ("openshift", "--skip-auth-regex=^/metrics$")):
        ops = yaml.safe_load((component / f"proxy-{name}.yaml").read_text())
        assert [op["value"] for op in ops if op["op"] == "add"] == [flag]
