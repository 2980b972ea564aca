"""What a round reads before it writes (docs/reconcile.md, "One round on one cluster"), over HTTP against
`fleet sim`: the inventories and the revision record only once the namespaces show `fleet-system`, and a
writer that makes them meanwhile is never overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core import inventory, model
from fleet.sim import testing
from tests.support import faultproxy
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_in_process


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("c1", labels={"env": "prod"})
    r.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    r.commit("first")
    return r


def fleet_system_reads(sim: testing.SimHandle, since: int) -> list[str]:
    return [
        r["path"]
        for r in sim.journal_sync("c1", since=since)
        if r["method"] == "GET" and f"/namespaces/{model.INVENTORY_NAMESPACE}/" in r["path"]
    ]


def test_a_round_on_a_cluster_fleet_never_wrote_to_reads_no_inventory_and_no_record(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert fleet_system_reads(sim, 0) == []  # no fleet-system yet: nothing there to read

    since = sim.journal_sync("c1")[-1]["seq"]
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    reads = fleet_system_reads(sim, since)  # now it exists: both are read, as every round does
    assert any(p.endswith("/configmaps") for p in reads), reads
    assert any("/configmaps/fleet-revision-" in p for p in reads), reads


def _without_fleet_system(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        doc["items"] = [
            i for i in doc["items"] if (i.get("metadata") or {}).get("name") != model.INVENTORY_NAMESPACE
        ]
    return doc


def test_an_inventory_made_after_the_namespaces_were_read_is_never_overwritten_nor_pruned_from(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two")
    with faultproxy.serving(sim.kubeconfig_dict) as proxy:
        # The namespaces list does not show fleet-system (as if it and the inventory were made by another
        # writer right after it was read): the round takes the inventory as absent and creates it.
        proxy.add(faultproxy.Rule(method="GET", path=r"^/api/v1/namespaces$", edit=_without_fleet_system))
        result = sync_in_process(repo.root, proxy.kubeconfig, instance="fleet", retry_budget=1.0)

    web = result.clusters["c1"].bundles["web"]
    name = model.inventory_name(instance="fleet", bundle="web")
    assert web.state is model.State.FAILED and web.retriable, web
    # The first create, of the bundle's inventory, meets the inventory there: the round stops before any
    # other write of the bundle.
    assert f"ConfigMap/fleet-system/{name}: created by another writer during this round" in web.message
    cm = live_objects(sim, "c1", namespace=model.INVENTORY_NAMESPACE)[name]
    refs = {str(r) for r in inventory.decode(cm, instance="fleet").refs}
    assert refs == {"ConfigMap/web/one", "ConfigMap/web/two"}  # not overwritten
    assert "two" in live_objects(sim, "c1", namespace="web")  # nothing pruned

    since = sim.journal_sync("c1")[-1]["seq"]
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok  # read whole again: pruned
    assert "two" not in live_objects(sim, "c1", namespace="web")
    assert fleet_system_reads(sim, since)


def test_at_the_same_revision_the_inventory_create_meets_the_inventory_and_writes_nothing_of_the_bundle(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    name = model.inventory_name(instance="fleet", bundle="web")
    before = live_objects(sim, "c1", namespace=model.INVENTORY_NAMESPACE)[name]["metadata"]["resourceVersion"]
    since = sim.journal_sync("c1")[-1]["seq"]
    with faultproxy.serving(sim.kubeconfig_dict) as proxy:
        proxy.add(faultproxy.Rule(method="GET", path=r"^/api/v1/namespaces$", edit=_without_fleet_system))
        result = sync_in_process(repo.root, proxy.kubeconfig, instance="fleet", retry_budget=1.0)

    web = result.clusters["c1"].bundles["web"]
    assert web.state is model.State.FAILED and web.retriable, web
    assert f"ConfigMap/fleet-system/{name}: created by another writer during this round" in web.message
    after = live_objects(sim, "c1", namespace=model.INVENTORY_NAMESPACE)[name]["metadata"]["resourceVersion"]
    assert after == before
    assert not [r for r in sim.journal_sync("c1", since=since) if r["mutated"]]  # nothing written at all
