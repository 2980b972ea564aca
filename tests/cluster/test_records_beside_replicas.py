"""The claims of replicas on the clusters they write (docs/reconcile.md, "Replicas of one source: the newer
revision wins", "The claim on every object"; docs/scaling.md), at the reconcile layer over real HTTP against
`fleet sim`.

A replica with a management cluster (its rounds under a fence) still leaves its claim on each cluster it
writes: on every object it applies, and in the source's revision record before a delete. A controller of
the same source without a management cluster (a single `fleet serve`, the old process of a rolling update
that adds `--management-kubeconfig`) learns the replicas' revision from those claims only. Holding an older
revision, it then writes nothing and prunes nothing there, rounds and drift repairs alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import kube, management, source
from fleet.cluster import reconcile, repair
from fleet.core import fencing, inventory, model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_request, writes

CLUSTER = "c-1"
EARLY = "2026-01-01T00:00:00.000Z"
LATE = "2099-01-01T00:00:00.000Z"
SINGLE = "single-1"  # the controller without a management cluster
REPLICA = "replica-1"  # a replica with one, under its shard lease


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


def client(sim: testing.SimHandle, who: str) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = kube.with_settings(kube.Settings(retry_budget=3.0), user_agent=management.user_agent(who))
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=settings)


def claim(repo: GitOpsRepo, revision: str, seen: str, who: str) -> inventory.Claim:
    return inventory.Claim(
        source=source.identity(repo.root), revision=revision, observed_at=seen, writer=f"fleet serve on {who}"
    )


def one_round(
    sim: testing.SimHandle, repo: GitOpsRepo, who: str, held: inventory.Claim, fence: fencing.Fence | None
) -> reconcile.ClusterResult:
    """One round of `who` at the repository's HEAD holding `held`; under `fence` for a replica."""

    async def main() -> reconcile.ClusterResult:
        parsed, targets, _ = await sync.prepare(sync_request(repo.root, sim.kubeconfig, instance="fleet"))
        options = reconcile.Options(
            wait=False, claim=held, fence=(lambda: fence) if fence is not None else None
        )
        c = client(sim, who)
        try:
            return await reconcile.reconcile_cluster(
                c, parsed.clusters[CLUSTER], targets[CLUSTER], options=options
            )
        finally:
            await c.aclose()

    return anyio.run(main)


def writes_of(sim: testing.SimHandle, who: str) -> list[str]:
    agent = management.user_agent(who)
    return [
        f"{e['method']} {e['path']}" for e in writes(sim.journal_sync(CLUSTER)) if e["userAgent"] == agent
    ]


def test_an_older_controller_without_a_management_cluster_writes_and_prunes_nothing_where_a_replica_wrote(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    older = repo.commit("first")
    assert one_round(sim, repo, SINGLE, claim(repo, older, EARLY, SINGLE), None).state is model.State.SYNCED
    # A replica with a management cluster fetched the next commit (seen later): `one` changed, `three` new.
    repo.bundle(
        "web",
        [configmap("one", key="newer"), configmap("two"), configmap("three")],
        namespace="web",
        selector={},
    )
    newer = repo.commit("second")
    fence = fencing.Fence(lease="fleet-shard-7", epoch=1)
    assert one_round(sim, repo, REPLICA, claim(repo, newer, LATE, REPLICA), fence).state is model.State.SYNCED
    # The controller without a management cluster still holds the first commit: its plan would put `one`
    # back and prune `three`.
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("the first again, as the older controller still has it")
    before = len(writes_of(sim, SINGLE))
    result = one_round(sim, repo, SINGLE, claim(repo, older, EARLY, SINGLE), None)
    assert result.state is model.State.FAILED, result
    assert f"superseded by revision {newer} written by another controller (fleet serve on {REPLICA}" in (
        result.message
    )
    assert writes_of(sim, SINGLE)[before:] == []
    live = live_objects(sim, CLUSTER, namespace="web")
    assert set(live) >= {"one", "two", "three"}
    assert live["one"]["data"] == {"key": "newer"}

    # Its drift repair of `one` (its watch saw the replica's write as drift) writes nothing either.
    wanted: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"key": "value"}}
    wanted["metadata"] = {
        "name": "one",
        "namespace": "web",
        "labels": live["one"]["metadata"]["labels"],
        "annotations": live["one"]["metadata"]["annotations"],
    }

    async def repaired() -> model.ChangeSet:
        c = client(sim, SINGLE)
        try:
            done = await repair.repair_objects(
                c,
                {model.ObjectRef.of(wanted): wanted},
                instance="fleet",
                claim=claim(repo, older, EARLY, SINGLE),
            )
            return done.changes
        finally:
            await c.aclose()

    changes = anyio.run(repaired)
    assert [c.action for c in changes.changes] == [model.Action.SKIPPED], changes
    assert writes_of(sim, SINGLE)[before:] == []
    assert live_objects(sim, CLUSTER, namespace="web")["one"]["data"] == {"key": "newer"}
