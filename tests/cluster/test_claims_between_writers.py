"""Claims between writers of one source, at the reconcile layer over real HTTP against `fleet sim`: which
claim a cluster shows as its newest when its objects carry the claims of several revisions (an object keeps
the claim of the last writer that changed it), and how a person's `fleet sync` hands a cluster back to the
controller (docs/reconcile.md, "Replicas of one source: the newer revision wins", "The claim on every
object")."""

from __future__ import annotations

from typing import Any

import anyio

from fleet.cluster import apply, repair
from fleet.core import inventory, model
from fleet.sim import testing
from tests.support.claims import CLUSTER, claim_for, claims_repo, claims_sim, client_for, last_seq, one_round
from tests.support.reconcile import (
    GitOpsRepo,
    configmap,
    live_objects,
    sync_in_process,
    writes,
)

LONG_AGO = "1970-01-01T00:00:00Z"  # a revision read back from the mirror, its first sighting unknown

__all__ = ["claims_repo", "claims_sim"]  # the fixtures `sim` and `repo`


def repair_one(
    sim: testing.SimHandle, name: str, data: dict[str, str], claim: inventory.Claim
) -> model.Change:
    """A drift repair of ConfigMap web/`name` to `data` by a controller holding `claim` (a gone object:
    recreated)."""
    labels = {model.LABEL_BUNDLE: "web", model.LABEL_OWNER: "fleet"}
    wanted: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "data": data}
    wanted["metadata"] = {"name": name, "namespace": "web", "labels": labels}

    async def main() -> model.ChangeSet:
        client = client_for(sim)
        try:
            ref = model.ObjectRef.of(wanted)
            return (await repair.repair_objects(client, {ref: wanted}, instance="fleet", claim=claim)).changes
        finally:
            await client.aclose()

    (change,) = anyio.run(main).changes
    return change


def test_a_persons_fleet_sync_at_the_controllers_revision_hands_the_cluster_back_after_a_rollback_that_pruned(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    """The emergency rollback: `fleet sync --rev <good>` prunes what the bad commit added (recording its
    claim first); then a person runs `fleet sync` at the controller's revision again. The controller
    follows its branch on that cluster again, rounds and drift repairs: the second sync recorded itself
    over the record of another revision (it used to leave the rollback's record there, newer than the
    controller's claim, and the controller stayed superseded until the next commit)."""
    good = str(repo.repo.head.target)
    repo.bundle("web", [configmap("one"), configmap("two"), configmap("three")], namespace="web", selector={})
    bad = repo.commit("adds three")
    controller = claim_for(repo, bad, "2026-06-01T00:00:00.000Z", "fleet serve on a")
    assert one_round(sim, repo, controller).state is model.State.SYNCED
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("the good commit's content")
    rollback = claim_for(repo, good, "2026-06-02T00:00:00.000Z", "fleet sync on laptop")
    assert one_round(sim, repo, rollback, yield_to_newer=False).state is model.State.SYNCED
    assert "three" not in live_objects(sim, CLUSTER, namespace="web")
    result = one_round(sim, repo, controller)
    assert result.state is model.State.FAILED and f"superseded by revision {good}" in result.message
    # The person hands the cluster back: `fleet sync` at the branch's revision, the controller's.
    repo.bundle("web", [configmap("one"), configmap("two"), configmap("three")], namespace="web", selector={})
    repo.commit("the bad commit's content")
    back = claim_for(repo, bad, "2026-06-03T00:00:00.000Z", "fleet sync on laptop")
    assert one_round(sim, repo, back, yield_to_newer=False).state is model.State.SYNCED
    mark = last_seq(sim)
    result = one_round(sim, repo, controller)
    assert result.state is model.State.SYNCED, result.message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    change = repair_one(sim, "two", {"key": "value"}, controller)
    assert change.action is not model.Action.SKIPPED, change.message


def test_claims_of_older_revisions_left_on_unchanged_objects_never_supersede_the_clusters_newest_claim(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    """An object keeps the claim of the commit that last changed it, so a cluster carries claims of older
    revisions beside the newest. They are not "another controller ahead": a controller restarted without
    its remote enforces the mirror's revision as seen long ago, and the cluster shows that very revision
    as its newest claim (as the record did when every round wrote it): it is not superseded by its own
    older commits."""
    first = str(repo.repo.head.target)
    assert (
        one_round(sim, repo, claim_for(repo, first, "2026-06-01T00:00:00.000Z")).state is model.State.SYNCED
    )
    repo.bundle("web", [configmap("one", key="changed"), configmap("two")], namespace="web", selector={})
    second = repo.commit("change one")
    assert (
        one_round(sim, repo, claim_for(repo, second, "2026-06-02T00:00:00.000Z")).state is model.State.SYNCED
    )
    # `two` still carries the first commit's claim; `one` the second's. The same controller restarts with
    # its remote unreachable and no state: it enforces `second` read back from its mirror.
    mark = last_seq(sim)
    result = one_round(sim, repo, claim_for(repo, second, LONG_AGO))
    assert result.state is model.State.SYNCED, result.message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    # Another controller still at the first commit is behind the cluster's newest claim: it backs off.
    result = one_round(sim, repo, claim_for(repo, first, "2026-06-01T00:00:00.000Z"))
    assert result.state is model.State.FAILED and f"superseded by revision {second}" in result.message


def delete_configmap(sim: testing.SimHandle, name: str) -> None:
    """A person deletes ConfigMap web/`name`."""

    async def main() -> None:
        client = client_for(sim)
        try:
            rt = apply.resolve(await client.types(), model.ObjectRef("", "v1", "ConfigMap", "web", name))
            assert rt is not None
            await client.delete(rt, namespace="web", name=name, uid=None, resource_version=None)
        finally:
            await client.aclose()

    anyio.run(main)


def test_a_persons_fleet_sync_rev_records_itself_so_the_controller_never_recreates_a_rolled_back_object_deleted(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    """The emergency rollback, `fleet sync --rev <good commit>`, over a bad commit that changed one object
    and deleted nothing: the sync records its claim before its first write, not only on that object. When
    someone deletes the object, the controller still at the bad commit sees the sync's claim in the record:
    its drift repair and its rounds recreate nothing (with the claim on the object only, it went with the
    object, and the controller's watch put the bad commit's object back at once)."""
    good = str(repo.repo.head.target)
    repo.bundle("web", [configmap("one", key="bad"), configmap("two")], namespace="web", selector={})
    bad = repo.commit("bad")
    controller = claim_for(repo, bad, "2026-06-01T00:00:00.000Z", "fleet serve on a")
    assert one_round(sim, repo, controller).state is model.State.SYNCED
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet", rev=good).ok
    assert live_objects(sim, CLUSTER, namespace="web")["one"]["data"] == {"key": "value"}
    delete_configmap(sim, "one")
    mark = last_seq(sim)
    change = repair_one(sim, "one", {"key": "bad"}, controller)
    assert change.action is model.Action.SKIPPED, change
    assert f"superseded by revision {good}" in change.message
    result = one_round(sim, repo, controller)
    assert result.state is model.State.FAILED and f"superseded by revision {good}" in result.message
    assert writes(sim.journal_sync(CLUSTER, since=mark)) == []
    assert "one" not in live_objects(sim, CLUSTER, namespace="web")
