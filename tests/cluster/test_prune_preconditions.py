"""Every delete fleet sends to a cluster carries DeleteOptions preconditions (the uid and resourceVersion of
the object as fleet read it when it decided to delete it), over real HTTP against `fleet sim`: a delete
that lands after anyone else wrote the object is refused (409) and deletes nothing, the pair is reported,
and the next round plans again from a fresh read (docs/reconcile.md "Pruning rules", docs/scaling.md
"Fencing"). A late delete is made with the sim's `hold` fault: the request stays unprocessed, another
writer changes the object, then it is released."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import kube
from fleet.cluster import apply, reconcile
from fleet.core import inventory, model, plan
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, send, sync_request

CLUSTER = "c-1"
OLD = "/api/v1/namespaces/web/configmaps/old"
INVENTORY = "/api/v1/namespaces/fleet-system/configmaps/fleet-inventory-web"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


def client(sim: testing.SimHandle) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=kube.Settings(retry_budget=3.0))


async def round_of(sim: testing.SimHandle, repo: GitOpsRepo) -> reconcile.ClusterResult:
    """One round at the repository's HEAD, as `fleet sync` runs it."""
    parsed, targets, _ = await sync.prepare(sync_request(repo.root, sim.kubeconfig, instance="fleet"))
    c = client(sim)
    try:
        return await reconcile.reconcile_cluster(
            c, parsed.clusters[CLUSTER], targets.get(CLUSTER, {}), options=reconcile.Options(wait=False)
        )
    finally:
        await c.aclose()


async def with_late(
    sim: testing.SimHandle, path: str, meanwhile: Callable[[], None], work: Callable[[], Any]
) -> Any:
    """Run `work` while the sim holds the DELETE of `path` unprocessed; once it is held, `meanwhile` (another
    writer) runs, then the DELETE is released and lands after it."""
    await sim.faults(CLUSTER, {"hold": True, "method": "DELETE", "path": f"^{path}$", "count": 1})
    out: list[Any] = []

    async def run() -> None:
        out.append(await work())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(20):
            # Polls the sim's rule: no event tells that a request is held.
            while (await sim.fault_rules(CLUSTER))[0]["held"] != 1:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await anyio.to_thread.run_sync(meanwhile)
        await sim.clear_faults(CLUSTER)  # released: it lands now, after the other write
    return out[0]


def deletes(sim: testing.SimHandle, path: str) -> list[tuple[int, bool]]:
    return [
        (e["status"], e["mutated"])
        for e in sim.journal_sync(CLUSTER)
        if (e["method"], e["path"]) == ("DELETE", path)
    ]


def inventory_refs(sim: testing.SimHandle) -> set[str]:
    resp = send(sim, CLUSTER, "GET", INVENTORY)
    resp.raise_for_status()
    return {r.name for r in inventory.decode(resp.json(), instance="fleet").refs}


def test_a_prune_whose_object_changed_since_it_was_read_deletes_nothing_and_the_next_round_plans_again(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("keep"), configmap("old")], namespace="web", selector={})
    repo.commit("both")
    assert anyio.run(round_of, sim, repo).state is model.State.SYNCED
    repo.bundle("web", [configmap("keep")], namespace="web", selector={})
    repo.commit("old dropped")

    def another_writer() -> None:  # still labelled as fleet's, but not as fleet read it
        assert send(sim, CLUSTER, "PATCH", OLD, {"data": {"key": "changed by someone"}}).is_success

    result = anyio.run(with_late, sim, OLD, another_writer, lambda: round_of(sim, repo))
    assert deletes(sim, OLD) == [(409, False)]
    assert live_objects(sim, CLUSTER, namespace="web")["old"]["data"] == {"key": "changed by someone"}
    web = result.bundles["web"]
    assert web.state is model.State.FAILED and web.retriable, web
    (change,) = [c for c in web.changes.changes if c.ref.name == "old"]
    assert change.action is model.Action.FAILED
    assert change.message.startswith("ConfigMap/web/old: not pruned: changed since it was read"), change
    assert "the next round plans again" in change.message
    assert "old" in inventory_refs(sim)  # it stays in the inventory: nothing of it is forgotten
    # The next round reads it again: still fleet's and no longer desired, it is deleted at its new version.
    assert anyio.run(round_of, sim, repo).state is model.State.SYNCED
    assert deletes(sim, OLD) == [(409, False), (200, True)]
    assert "old" not in live_objects(sim, CLUSTER, namespace="web")
    assert inventory_refs(sim) == {"keep"}


def test_a_namespace_prune_that_lands_after_the_namespace_changed_deletes_nothing(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    team = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("keep"), team], namespace="web", selector={})
    repo.commit("with a namespace")
    assert anyio.run(round_of, sim, repo).state is model.State.SYNCED
    repo.bundle("web", [configmap("keep")], namespace="web", selector={})
    repo.commit("namespace dropped")

    def another_writer() -> None:
        patch = {"metadata": {"labels": {"team": "taken"}}}
        assert send(sim, CLUSTER, "PATCH", "/api/v1/namespaces/team", patch).is_success

    result = anyio.run(with_late, sim, "/api/v1/namespaces/team", another_writer, lambda: round_of(sim, repo))
    assert deletes(sim, "/api/v1/namespaces/team") == [(409, False)]
    ns = send(sim, CLUSTER, "GET", "/api/v1/namespaces/team").json()
    assert ns["status"]["phase"] == "Active" and ns["metadata"]["labels"]["team"] == "taken"
    assert result.bundles["web"].state is model.State.FAILED
    assert "Namespace/team: not pruned: changed since it was read" in result.bundles["web"].message


def test_an_inventory_deleted_after_another_writer_wrote_it_is_kept_and_the_round_fails(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("old")], namespace="web", selector={})
    repo.bundle("other", [configmap("other")], namespace="web", selector={})
    repo.commit("web and other")
    assert anyio.run(round_of, sim, repo).state is model.State.SYNCED
    repo.remove("bundles/web")
    repo.commit("web removed")

    def another_writer() -> None:  # a newer owner's write of the inventory, after this round read it
        patch = {"metadata": {"annotations": {"example.com/written": "by another owner"}}}
        assert send(sim, CLUSTER, "PATCH", INVENTORY, patch).is_success

    result = anyio.run(with_late, sim, INVENTORY, another_writer, lambda: round_of(sim, repo))
    assert deletes(sim, INVENTORY) == [(409, False)]
    assert send(sim, CLUSTER, "GET", INVENTORY).is_success
    assert result.state is model.State.FAILED
    assert "fleet-inventory-web: changed by another writer during this round; not deleted" in result.message


def test_a_prune_target_whose_version_is_unknown_is_read_before_its_delete(sim: testing.SimHandle) -> None:
    ref = model.ObjectRef("", "v1", "ConfigMap", "default", "unread")
    gone = model.ObjectRef("", "v1", "ConfigMap", "default", "gone")
    body = configmap("unread", namespace="default")
    assert send(sim, CLUSTER, "POST", "/api/v1/namespaces/default/configmaps", body).is_success

    async def main() -> tuple[model.ChangeSet, frozenset[model.ObjectRef]]:
        c = client(sim)
        try:
            steps = (plan.PruneStep(ref, plan.PruneOp.DELETE), plan.PruneStep(gone, plan.PruneOp.DELETE))
            return await apply.prune_bundle(c, plan.BundlePlan("web", plan.Outcome.RUN, prune=steps))
        finally:
            await c.aclose()

    before = len(sim.journal_sync(CLUSTER))
    changes, keep = anyio.run(main)
    assert [(c.ref.name, c.action, c.message) for c in changes.changes] == [
        ("unread", model.Action.DELETED, ""),
        ("gone", model.Action.DELETED, "already gone"),
    ]
    assert keep == frozenset()
    sent = [
        (e["method"], e["path"].rsplit("/", 1)[1])
        for e in sim.journal_sync(CLUSTER)[before:]
        if "/configmaps/" in e["path"]
    ]
    assert sorted(sent) == [("DELETE", "unread"), ("GET", "gone"), ("GET", "unread")]
    assert sent.index(("GET", "unread")) < sent.index(("DELETE", "unread"))
