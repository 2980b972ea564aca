"""More of fleet's own paths against the real API servers of tests/support/kube.py: drift repair of a
cluster-scoped object, the Kubernetes Events fleet writes read back with the real kubectl, the history of
a real rollout kept across a restart of `fleet serve`, a prune whose dependents the real garbage collector
removes, and a CRD moved to a new storage version with its custom resources.

Each test uses its own fleet instance, namespaces and repository: the clusters live for the session.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import kube, real, serve
from tests.support.reconcile import GitOpsRepo, configmap, run_fleet, sync_in_process

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOTH = ["real-1", "real-2"]
ALL_AT_ONCE = {"waves": [{"name": "all", "maxConcurrency": "100%"}]}


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@contextmanager
def serving(
    plane: kube.ControlPlane,
    tmp_path: Path,
    repo: GitOpsRepo,
    instance: str,
    clusters: list[str],
    *,
    log: str = "serve.log",
) -> Iterator[serve.ServeProcess]:
    with serve.serving(
        repo=repo.root,
        kubeconfig=plane.kubeconfig(clusters),
        state_dir=tmp_path / "state",
        log=tmp_path / log,
        args=["--interval", "1s", "--instance", instance, "--health-timeout", "30s"],
    ) as fleet:
        yield fleet


def synced_at(sha: str, clusters: list[str]) -> Callable[[dict[str, Any]], bool]:
    def check(doc: dict[str, Any]) -> bool:
        cs = doc.get("clusters") or {}
        return set(cs) == set(clusters) and all(
            c["state"] == "Synced" and c["revision"] == sha for c in cs.values()
        )

    return check


def cluster_role(name: str, *verbs: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": list(verbs)}],
    }


def events(plane: kube.ControlPlane, cluster: str, instance: str) -> list[dict[str, Any]]:
    """fleet's Events of this instance on a cluster, read with the real kubectl."""
    done = real.kubectl(
        plane, cluster, "get", "events.events.k8s.io", "-n", real.INVENTORY_NAMESPACE, "-o", "json"
    )
    return [
        e
        for e in json.loads(done.stdout)["items"]
        if e.get("reportingController") == "fleet.dev/fleet" and e.get("reportingInstance") == instance
    ]


def test_fleet_serve_repairs_a_deleted_cluster_scoped_object_and_its_events_are_read_back_with_kubectl(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns, role = f"e{suffix}", f"ev-{suffix}", f"fleet-test-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1")
    repo.bundle("rbac", [cluster_role(role, "get", "list")], selector={}, rollout=ALL_AT_ONCE)
    repo.bundle(
        "settings", [configmap("settings", colour="blue")], namespace=ns, selector={}, rollout=ALL_AT_ONCE
    )
    first = repo.commit("first")
    path = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role}"
    with serving(real_kube, tmp_path, repo, instance, ["real-1"]) as fleet:
        fleet.wait_for(synced_at(first, ["real-1"]), timeout=90, what="real-1 Synced")
        fleet.wait_for(
            lambda d: (d["clusters"]["real-1"].get("watch") or {}).get("streams", 0) >= 1,
            what="the watch streams open",
        )
        made = real.get(real_kube, "real-1", path)
        assert made is not None and made["rules"][0]["verbs"] == ["get", "list"]

        real.kubectl(real_kube, "real-1", "delete", "clusterrole", role)
        real.kubectl(real_kube, "real-1", "-n", ns, "delete", "configmap", "settings")

        def repaired() -> bool:
            again = real.get(real_kube, "real-1", path)
            return (
                again is not None
                and again["metadata"]["uid"] != made["metadata"]["uid"]
                and "settings" in real.objects(real_kube, "real-1", ns)
            )

        real.eventually(repaired, timeout=30, what="the deleted ClusterRole and ConfigMap written back")
        assert real.get(real_kube, "real-1", path)["rules"][0]["verbs"] == ["get", "list"]  # type: ignore[index]

        def written() -> bool:
            reasons = {(e["reason"], e["regarding"]["name"]) for e in events(real_kube, "real-1", instance)}
            return {("DriftRepaired", "settings"), ("DriftRepaired", f"{instance}-inventory-rbac")} <= reasons

        real.eventually(written, timeout=30, what="fleet's DriftRepaired Events on real-1")
        failed = [
            line
            for line in fleet.get("/metrics").text.splitlines()
            if line.startswith("fleet_kube_events_total{") and 'result="failed"' in line
        ]
        assert all(float(line.rsplit(" ", 1)[1]) == 0 for line in failed), failed
    found = events(real_kube, "real-1", instance)
    by = {(e["reason"], e["regarding"]["name"]): e for e in found}
    applied = by[("Applied", f"{instance}-inventory-rbac")]
    assert applied["type"] == "Normal" and applied["note"] == f"revision {first[:12]}: bundle rbac: 1 created"
    assert applied["regarding"]["namespace"] == real.INVENTORY_NAMESPACE
    # A cluster-scoped object's repair regards the inventory (an Event in fleet-system may not regard it).
    assert by[("DriftRepaired", f"{instance}-inventory-rbac")]["note"] == (
        f"revision {first[:12]}: bundle rbac: written back: ClusterRole {role}"
    )
    one = by[("DriftRepaired", "settings")]
    assert one["regarding"] == {"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "settings"}
    table = real.kubectl(real_kube, "real-1", "get", "events", "-n", real.INVENTORY_NAMESPACE).stdout
    assert any("DriftRepaired" in line and "configmap/settings" in line for line in table.splitlines()), table
    real.kubectl(real_kube, "real-1", "delete", "clusterrole", role)


def history(fleet: serve.ServeProcess, *args: str) -> list[dict[str, Any]]:
    out = run_fleet("history", "--server", fleet.url, "--format", "json", "--limit", "1000", *args)
    assert out.returncode == 0, out.stderr
    entries: list[dict[str, Any]] = json.loads(out.stdout)["entries"]
    return entries


def test_the_history_of_a_real_rollout_is_kept_across_a_restart_of_fleet_serve_which_rewrites_nothing(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns = f"r{suffix}", f"hist-{suffix}"
    repo = GitOpsRepo(tmp_path / "repo")
    for c in BOTH:
        repo.cluster(c)
    canary_first = {"waves": [{"name": "canary", "placement": {"clusters": ["real-1"]}}, {"name": "rest"}]}
    repo.bundle("web", [configmap("web", colour="blue")], namespace=ns, selector={}, rollout=canary_first)
    first = repo.commit("blue", author="Ada Lovelace")
    with serving(real_kube, tmp_path, repo, instance, BOTH) as fleet:
        fleet.wait_for(synced_at(first, BOTH), timeout=90, what="both clusters Synced at blue")
        repo.bundle(
            "web", [configmap("web", colour="green")], namespace=ns, selector={}, rollout=canary_first
        )
        second = repo.commit("green", author="Bea Smith")
        fleet.wait_for(synced_at(second, BOTH), timeout=90, what="both clusters Synced at green")
        before = history(fleet, "--bundle", "web")
    synced = [(e["cluster"], e["toRevision"]) for e in before if e["outcome"] == "Synced"]
    assert sorted(synced) == sorted([(c, r) for c in BOTH for r in (first, second)])
    green = {e["cluster"]: e for e in before if e["toRevision"] == second}
    assert green["real-1"]["at"] <= green["real-2"]["at"]  # the canary first
    assert green["real-2"]["fromRevision"] == first and green["real-2"]["actor"] == "Bea Smith"
    assert green["real-2"]["objects"] == {"configured": 1}
    versions = {c: real.objects(real_kube, c, ns)["web"]["metadata"]["resourceVersion"] for c in BOTH}

    with serving(real_kube, tmp_path, repo, instance, BOTH, log="restarted.log") as fleet:  # same state dir
        doc = fleet.wait_for(
            synced_at(second, BOTH), timeout=90, what="both clusters Synced after the restart"
        )
        assert doc["rollouts"]["web"]["revision"] == second and doc["rollouts"]["web"]["state"] == "Completed"
        after = history(fleet, "--bundle", "web")
    assert after == before  # nothing was written again, so nothing new to tell
    assert {c: real.objects(real_kube, c, ns)["web"]["metadata"]["resourceVersion"] for c in BOTH} == versions


def test_a_removed_bundles_prune_leaves_the_dependents_of_what_it_deletes_to_the_real_garbage_collector(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns = f"g{suffix}", f"gc-{suffix}"
    admin = real_kube.kubeconfig(["real-1"])
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("real-1")
    repo.bundle("parent", [configmap("parent")], namespace=ns, selector={})
    repo.bundle("keep", [configmap("keep")], namespace=ns, selector={})
    repo.commit("first")
    assert sync_in_process(repo.root, admin, instance=instance).ok
    parent = real.objects(real_kube, "real-1", ns)["parent"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent["metadata"]["uid"]}
    with real_kube.client("real-1") as api:  # what another controller makes: a dependent fleet does not own
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "ownerReferences": [ref]},
        }
        assert api.post(f"/api/v1/namespaces/{ns}/configmaps", json=child).status_code == 201

    repo.remove("bundles/parent")
    repo.commit("parent removed")
    result = sync_in_process(repo.root, admin, instance=instance)
    assert result.ok
    deleted = [str(c.ref) for c in result.clusters["real-1"].removed["parent"].changes.changes]
    assert deleted == [f"ConfigMap/{ns}/parent"]  # fleet deleted only what it owned
    real.eventually(
        lambda: set(real.objects(real_kube, "real-1", ns)) == {"keep"},
        timeout=60,
        what="the garbage collector to delete the child",
    )
    assert real.inventory(real_kube, "real-1", instance=instance, bundle="parent") is None


def widgets_crd(group: str, *, storage: str) -> dict[str, Any]:
    schema = {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
        }
    }
    versions = [{"name": v, "served": True, "storage": v == storage, "schema": schema} for v in ("v1", "v2")]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": versions if storage == "v2" else versions[:1],
        },
    }


def test_a_crd_upgraded_to_a_new_storage_version_keeps_its_custom_resources_which_fleet_moves_in_place(
    real_kube: kube.ControlPlane, tmp_path: Path, suffix: str
) -> None:
    instance, ns = f"c{suffix}", f"crd-{suffix}"
    group = f"{instance}.example.com"
    admin = real_kube.kubeconfig(BOTH)
    repo = GitOpsRepo(tmp_path / "repo")
    for c in BOTH:
        repo.cluster(c)

    def widget(version: str, size: int) -> dict[str, Any]:
        return {
            "apiVersion": f"{group}/{version}",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": size},
        }

    repo.bundle("crds", [widgets_crd(group, storage="v1")], selector={})
    repo.bundle("widgets", [widget("v1", 3)], namespace=ns, selector={}, dependsOn=["crds"])
    repo.commit("v1")
    assert sync_in_process(repo.root, admin, instance=instance, wait=True).ok
    uids = {
        c: real.objects(real_kube, c, ns, "widgets", group=f"{group}/v1")["w1"]["metadata"]["uid"]
        for c in BOTH
    }

    repo.bundle("crds", [widgets_crd(group, storage="v2")], selector={})
    repo.bundle("widgets", [widget("v2", 5)], namespace=ns, selector={}, dependsOn=["crds"])
    repo.commit("v2 is the storage version; the widget moves to it")
    result = sync_in_process(repo.root, admin, instance=instance, wait=True)
    assert result.ok, [c.bundles["widgets"].problems for c in result.clusters.values()]
    for cluster in BOTH:
        changes = {
            str(c.ref): str(c.action) for c in result.clusters[cluster].bundles["widgets"].changes.changes
        }
        assert changes == {f"Widget/{ns}/w1": "configured"}  # the same object at its new version: no prune
        v2 = real.objects(real_kube, cluster, ns, "widgets", group=f"{group}/v2")["w1"]
        assert v2["spec"] == {"size": 5} and v2["metadata"]["uid"] == uids[cluster]
        v1 = real.objects(real_kube, cluster, ns, "widgets", group=f"{group}/v1")["w1"]
        assert v1["spec"] == {"size": 5}  # still served at v1 too
        crd = real.get(
            real_kube, cluster, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{group}"
        )
        assert crd is not None and [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == ["v2"]
        assert real.inventory(real_kube, cluster, instance=instance, bundle="widgets") == {f"Widget/{ns}/w1"}
    again = sync_in_process(repo.root, admin, instance=instance)
    assert again.ok
    assert {str(c.action) for c in again.clusters["real-1"].bundles["widgets"].changes.changes} == {
        "unchanged"
    }
