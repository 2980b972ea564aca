"""`fleet sync` on a cluster where an APIService's backend is missing (metrics-server not installed, or down).

Such a cluster lists the APIService's group but fails its discovery (`Stale` in aggregated discovery, 503
for the group version). fleet must go on reconciling every other kind there, say clearly which group is
broken, fail only the objects of that group (naming it, not "is its CRD installed?"), and never prune a
namespace whose content it cannot see whole. The same scenario runs on `fleet sim` and on a real API
server (docs/sim.md, "APIServices"; docs/real-cluster.md).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.sim import testing
from tests.support import kube
from tests.support.reconcile import GitOpsRepo, configmap, run_fleet

pytestmark = pytest.mark.slow

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


def apiservice(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"v1beta1.{group}"},
        "spec": {
            "group": group,
            "version": "v1beta1",
            "service": {"namespace": "kube-system", "name": "no-such-metrics-server"},
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


@contextmanager
def broken_group(client: httpx.Client, group: str) -> Iterator[None]:
    """An APIService whose Service is missing, until the block ends (whatever happens in it)."""
    made = client.post(APISERVICES, json=apiservice(group))
    assert made.status_code == 201, made.text
    try:
        yield
    finally:
        client.delete(f"{APISERVICES}/v1beta1.{group}")


def wait_unavailable(client: httpx.Client, group: str) -> None:
    """Until the APIService is judged (the group's discovery fails from then on)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conds = (client.get(f"{APISERVICES}/v1beta1.{group}").json().get("status") or {}).get(
            "conditions"
        ) or []
        if any(c.get("type") == "Available" and c.get("status") == "False" for c in conds):
            return
        time.sleep(0.1)
    raise AssertionError(f"the APIService of {group} was not judged unavailable within 30s")


def scenario(client: httpx.Client, kubeconfig: Path, cluster: str, root: Path) -> dict[str, Any]:
    """A broken group on `cluster`, then `fleet sync` of a bundle of ConfigMaps and a bundle holding an
    object of the broken group; what fleet answered, plus the objects it made."""
    suffix = uuid.uuid4().hex[:6]
    group, web, instance = f"metrics-{suffix}.example.com", f"web-{suffix}", f"i{suffix}"
    repo = GitOpsRepo(root)
    repo.cluster(cluster)
    repo.bundle("web", [configmap("settings"), configmap("more")], namespace=web, selector={})
    pod_metrics = {"apiVersion": f"{group}/v1beta1", "kind": "PodMetrics", "metadata": {"name": "m"}}
    repo.bundle("metrics", [pod_metrics], namespace=f"mon-{suffix}", selector={})
    repo.commit("a bundle of ConfigMaps and one of the broken group")
    with broken_group(client, group):
        wait_unavailable(client, group)
        done = run_fleet(
            "sync", str(root), "--kubeconfig", str(kubeconfig), "--instance", instance, "--format", "json"
        )
        listed = client.get(f"/api/v1/namespaces/{web}/configmaps").json().get("items", [])
    report = json.loads(done.stdout)
    return {
        "exit": done.returncode,
        "stderr": done.stderr.replace(suffix, "<x>"),
        "web": report["clusters"][cluster]["bundles"]["web"]["state"],
        "metrics": report["clusters"][cluster]["bundles"]["metrics"],
        "warnings": [w.replace(suffix, "<x>") for w in report["clusters"][cluster]["warnings"]],
        "configmaps": sorted(
            i["metadata"]["name"] for i in listed if i["metadata"]["name"] != "kube-root-ca.crt"
        ),
        "group": group,
    }


def check(outcome: dict[str, Any], cluster: str) -> None:
    group = "metrics-<x>.example.com"
    # The ConfigMaps are reconciled as on any cluster.
    assert outcome["web"] == "Synced"
    assert outcome["configmaps"] == ["more", "settings"]
    # The broken group is reported for the cluster, in the JSON report and on stderr...
    warning = (
        f"API group version {group}/v1beta1 is unavailable: its discovery fails (an APIService whose backend "
        "does not answer); objects of its kinds can be neither applied, pruned nor checked on this cluster"
    )
    assert outcome["warnings"] == [warning]
    assert f"warning: cluster {cluster}: {warning}" in outcome["stderr"]
    # ...and the one object of that group fails, naming it (not "is its CustomResourceDefinition installed?").
    metrics = outcome["metrics"]
    assert metrics["state"] == "Failed"
    (change,) = metrics["changes"]
    assert change["action"] == "failed"
    assert (
        change["message"]
        .replace(outcome["group"], group)
        .endswith(
            f'no matches for kind "PodMetrics" in version "{group}/v1beta1": the API group version is '
            "unavailable on this cluster (its discovery fails)"
        )
    )
    assert "CustomResourceDefinition" not in change["message"]
    assert outcome["exit"] == 1  # a bundle failed


def test_fleet_sync_on_a_sim_cluster_with_an_unavailable_apiservice_reconciles_the_rest_and_names_it(
    tmp_path: Path,
) -> None:
    with testing.serving(names=["sim-1"]) as sim, httpx.Client(base_url=sim.url("sim-1"), timeout=10) as c:
        outcome = scenario(c, sim.kubeconfig, "sim-1", tmp_path / "repo")
    check(outcome, "sim-1")


@pytest.mark.real
def test_fleet_sync_on_a_real_cluster_with_an_unavailable_apiservice_reconciles_the_rest_and_names_it(
    real_kube: kube.ControlPlane, tmp_path: Path
) -> None:
    (one,) = real_kube.clusters(1)
    with real_kube.client(one.name) as c:
        outcome = scenario(c, real_kube.kubeconfig([one.name]), one.name, tmp_path / "repo")
    check(outcome, one.name)


def test_a_namespace_is_not_pruned_while_a_group_it_may_hold_objects_of_is_unavailable(
    tmp_path: Path,
) -> None:
    """Unknown is never empty: with a group's discovery failing, a namespace's content cannot be listed
    whole, so fleet keeps the namespace (and its inventory entry) until it can see that it is empty."""
    root = tmp_path / "repo"
    repo = GitOpsRepo(root)
    repo.cluster("sim-1")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    repo.bundle("web", [namespace, configmap("settings", namespace="web")], selector={})
    repo.bundle("other", [configmap("settings")], namespace="other", selector={})
    repo.commit("web and other")
    with testing.serving(names=["sim-1"]) as sim, httpx.Client(base_url=sim.url("sim-1"), timeout=10) as c:

        def sync() -> dict[str, Any]:
            done = run_fleet("sync", str(root), "--kubeconfig", str(sim.kubeconfig), "--format", "json")
            assert done.returncode == 0, done.stderr
            report: dict[str, Any] = json.loads(done.stdout)
            return report["clusters"]["sim-1"]["removed"]

        assert sync() == {}
        repo.remove("bundles/web")
        repo.commit("web is gone")
        with broken_group(c, "metrics.example.com"):
            wait_unavailable(c, "metrics.example.com")
            removed = sync()["web"]
            assert c.get("/api/v1/namespaces/web").json()["status"]["phase"] == "Active"
            assert [ch["message"] for ch in removed["changes"] if ch["object"] == "Namespace/web"] == [
                "Namespace/web: not pruned: its content cannot be listed whole "
                "(metrics.example.com/v1beta1 unavailable)"
            ]
        # Once the group is served again (here: gone), the next sync sees the namespace empty and prunes it.
        assert [ch["action"] for ch in sync()["web"]["changes"]] == ["deleted"]
        assert c.get("/api/v1/namespaces/web").status_code == 404
