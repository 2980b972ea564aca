"""Deletion with the real kubectl and over raw HTTP: cascades, finalizers, `wait --for=delete`, namespaces.

Reference: the real server's finalizers, garbage collector and namespace lifecycle (docs/sim.md, "The
sim's own controllers"); kubectl waits for deletions by default, so a returning `kubectl delete` means
the object is gone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.sim.kubectl_runner import KUBECTL, Runner, eventually

APPS = "/apis/apps/v1/namespaces/default"
CM = "/api/v1/namespaces/default/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"], settings=store.Settings(workload_delay=0.1)) as handle:
        yield handle


@pytest.fixture
def client(sim: testing.SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url("c1"), timeout=10.0) as c:
        yield c


@pytest.fixture
def kubectl(sim: testing.SimHandle, tmp_path: Path) -> Runner:
    return Runner(sim, tmp_path / "cache", "c1")


def deployment_with_replicaset(client: httpx.Client, *, block: bool = True) -> dict[str, Any]:
    """A Deployment `web` owning a ReplicaSet `web-1` (as the deployment controller would make it)."""
    labels = {"app": "web"}
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "m", "image": "nginx"}]}}
    spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod}
    owner = client.post(
        f"{APPS}/deployments",
        json={"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec},
    ).json()
    ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": block,
    }
    rs = client.post(
        f"{APPS}/replicasets",
        json={
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "ownerReferences": [ref]},
            "spec": spec,
        },
    )
    assert rs.status_code == 201, rs.text
    return owner


def events_of(client: httpx.Client, path: str, rv: str, seconds: int = 1) -> list[dict[str, Any]]:
    with client.stream(
        "GET", path, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": str(seconds)}
    ) as stream:
        return [json.loads(line) for line in stream.iter_lines() if line]


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_delete_cascade_foreground_removes_dependents_before_the_owner(
    client: httpx.Client, kubectl: Runner
) -> None:
    owner = deployment_with_replicaset(client)
    rv = client.get(f"{APPS}/replicasets/web-1").json()["metadata"]["resourceVersion"]
    out = kubectl("delete", "deployment", "web", "--cascade=foreground", "--timeout=20s")
    assert 'deployment.apps "web" deleted' in out.stdout
    assert client.get(f"{APPS}/deployments/web").status_code == 404
    assert client.get(f"{APPS}/replicasets/web-1").status_code == 404
    deploy_events = events_of(client, f"{APPS}/deployments", rv)
    rs_events = events_of(client, f"{APPS}/replicasets", rv)
    marked = [
        e
        for e in deploy_events
        if e["type"] == "MODIFIED" and e["object"]["metadata"].get("deletionTimestamp")
    ]
    assert marked and "foregroundDeletion" in marked[0]["object"]["metadata"]["finalizers"]
    owner_gone = next(
        int(e["object"]["metadata"]["resourceVersion"]) for e in deploy_events if e["type"] == "DELETED"
    )
    rs_gone = next(
        int(e["object"]["metadata"]["resourceVersion"]) for e in rs_events if e["type"] == "DELETED"
    )
    assert rs_gone < owner_gone
    assert marked[0]["object"]["metadata"]["uid"] == owner["metadata"]["uid"]


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_delete_cascade_orphan_keeps_dependents_without_the_owner_reference(
    client: httpx.Client, kubectl: Runner
) -> None:
    deployment_with_replicaset(client)
    kubectl("delete", "deployment", "web", "--cascade=orphan", "--timeout=20s")
    assert client.get(f"{APPS}/deployments/web").status_code == 404
    rs = client.get(f"{APPS}/replicasets/web-1").json()
    assert "ownerReferences" not in rs["metadata"]


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_delete_cascade_background_removes_dependents_after_the_owner(
    client: httpx.Client, kubectl: Runner
) -> None:
    deployment_with_replicaset(client, block=False)
    kubectl("delete", "deployment", "web", "--cascade=background", "--timeout=20s")
    assert client.get(f"{APPS}/deployments/web").status_code == 404
    eventually(lambda: client.get(f"{APPS}/replicasets/web-1").status_code == 404, what="dependent collected")


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_wait_for_delete_returns_once_the_last_finalizer_is_removed(
    client: httpx.Client, kubectl: Runner, sim: testing.SimHandle, tmp_path: Path
) -> None:
    client.post(CM, json={"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    out = kubectl("delete", "configmap", "held", "--wait=false")
    assert 'configmap "held" deleted' in out.stdout
    held = client.get(f"{CM}/held").json()
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["deletionGracePeriodSeconds"] == 0
    cmd = [
        KUBECTL,
        "--kubeconfig",
        str(sim.kubeconfig),
        "--context",
        "c1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "wait",
        "--for=delete",
        "configmap/held",
        "--timeout=20s",
    ]
    waiter = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def opened() -> bool:
            return any("watch=" in e["query"] for e in sim.journal_sync("c1"))

        eventually(opened, what="kubectl's watch")
        assert waiter.poll() is None  # still waiting: the finalizer holds the object
        released = client.patch(
            f"{CM}/held", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE
        )
        assert released.status_code == 200
        stdout, stderr = waiter.communicate(timeout=20)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
    assert waiter.returncode == 0, stderr
    assert "configmap/held condition met" in stdout
    assert client.get(f"{CM}/held").status_code == 404


@pytest.mark.slow  # starts processes: kubectl
def test_kubectl_delete_namespace_removes_its_content(
    client: httpx.Client, kubectl: Runner, tmp_path: Path
) -> None:
    path = tmp_path / "team.yaml"
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "team"},
            "data": {"k": "v"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "team"},
            "stringData": {"k": "v"},
        },
    ]
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    kubectl("apply", "-f", str(path))
    out = kubectl("delete", "namespace", "team", "--timeout=30s")
    assert 'namespace "team" deleted' in out.stdout
    assert client.get("/api/v1/namespaces/team").status_code == 404
    assert client.get("/api/v1/namespaces/team/configmaps").json()["items"] == []
    assert client.get("/api/v1/namespaces/team/secrets").json()["items"] == []


@pytest.mark.slow  # starts processes: kubectl
@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_kubectl_cannot_delete_the_system_namespaces(kubectl: Runner, name: str) -> None:
    out = kubectl("delete", "namespace", name, check=False)
    assert out.returncode != 0
    assert f'namespaces "{name}" is forbidden: this namespace may not be deleted' in out.stderr
    assert kubectl("get", "namespace", name, "-o", "name").stdout.strip() == f"namespace/{name}"


def test_a_terminating_namespace_refuses_creates_but_allows_updates_until_it_is_empty(
    client: httpx.Client,
) -> None:
    client.post("/api/v1/namespaces", json={"metadata": {"name": "held"}})
    path = "/api/v1/namespaces/held/configmaps"
    client.post(path, json={"metadata": {"name": "keep", "finalizers": ["example.com/hold"]}})
    r = client.delete("/api/v1/namespaces/held")
    assert r.status_code == 200
    assert r.json()["status"]["phase"] == "Terminating" and r.json()["metadata"]["deletionTimestamp"]
    refused = client.post(path, json={"metadata": {"name": "new"}})
    assert refused.status_code == 403
    body = refused.json()
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'configmaps "new" is forbidden: unable to create new content in namespace held because it is being terminated'
    )
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    applied = client.patch(
        f"{path}/other",
        content=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "t"},
    )
    assert applied.status_code == 403
    eventually(lambda: client.get(f"{path}/keep").json()["metadata"].get("deletionTimestamp") is not None)
    labelled = client.patch(
        f"{path}/keep", content=json.dumps({"metadata": {"labels": {"a": "b"}}}), headers=MERGE
    )
    assert labelled.status_code == 200
    assert client.get("/api/v1/namespaces/held").status_code == 200
    client.patch(f"{path}/keep", content=json.dumps({"metadata": {"finalizers": None}}), headers=MERGE)
    eventually(lambda: client.get("/api/v1/namespaces/held").status_code == 404, what="namespace removed")
