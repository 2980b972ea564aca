"""A replica's rounds under their fence (`fleet.cluster.reconcile.Options.fence`, docs/scaling.md), over real
HTTP against `fleet sim`: a round that may not write sends nothing, and a stale owner's round, even one
that read the cluster before the newer owner wrote, never prunes what the newer owner applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import kube, management, source
from fleet.cluster import reconcile
from fleet.core import fencing, inventory, model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_request

CLUSTER = "c-1"
LEASE = "fleet-shard-7"


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


def client(sim: testing.SimHandle, replica: str) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = kube.with_settings(kube.Settings(retry_budget=3.0), user_agent=management.user_agent(replica))
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=settings)


async def round_of(
    sim: testing.SimHandle, repo: GitOpsRepo, replica: str, fence: Any, reported: list[int] | None = None
) -> reconcile.ClusterResult:
    """One round of `replica` at the repository's HEAD, under `fence` (no revision record: only the fence
    keeps an older revision from pruning)."""
    request = sync_request(repo.root, sim.kubeconfig, instance="fleet")
    parsed, targets, _ = await sync.prepare(request)
    c = client(sim, replica)
    try:
        return await reconcile.reconcile_cluster(
            c,
            parsed.clusters[CLUSTER],
            targets[CLUSTER],
            options=reconcile.Options(
                wait=False, fence=fence, on_fenced=reported.append if reported is not None else None
            ),
        )
    finally:
        await c.aclose()


def writes_of(sim: testing.SimHandle, replica: str) -> list[str]:
    agent = management.user_agent(replica)
    return [
        f"{e['method']} {e['path']}"
        for e in sim.journal_sync(CLUSTER)
        if e["userAgent"] == agent and e["method"] != "GET"
    ]


def test_a_round_whose_replica_may_not_write_sends_nothing_and_is_no_verdict_on_the_cluster(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("first")
    result = anyio.run(round_of, sim, repo, "a-1", lambda: None)
    assert result.fenced and result.state is model.State.FAILED
    assert "no longer holds the cluster's shard lease" in result.message
    assert writes_of(sim, "a-1") == []


def test_a_stale_owner_never_prunes_what_a_newer_owner_applied(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("old")
    stale = fencing.Fence(lease=LEASE, epoch=7)
    assert anyio.run(round_of, sim, repo, "a-1", lambda: stale).state is model.State.SYNCED
    # The newer owner (epoch 8) applies a newer revision with one more object.
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("new")
    newer = fencing.Fence(lease=LEASE, epoch=8)
    assert anyio.run(round_of, sim, repo, "b-2", lambda: newer).state is model.State.SYNCED
    # The stale owner still holds the old revision: its plan would prune `two`.
    repo.bundle("web", [configmap("one")], namespace="web", selector={})
    repo.commit("old again, as the stale owner still has it")
    before = len(writes_of(sim, "a-1"))
    reported: list[int] = []
    result = anyio.run(round_of, sim, repo, "a-1", lambda: stale, reported)
    assert result.fenced, result
    assert "newer owner of shard lease fleet-shard-7 (epoch 8)" in result.message
    assert reported == [8]
    assert set(live_objects(sim, CLUSTER, namespace="web")) >= {"one", "two"}
    assert writes_of(sim, "a-1")[before:] == []


def test_a_round_whose_replica_loses_the_cluster_during_its_inventory_write_sends_no_apply_after_it(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    """The CI failure of test_a_stale_replicas_prune_delete_held_on_the_wire...: a replica SIGSTOPped while
    its round's first write (then the revision record; here the bundle's inventory, written before a new
    object) was on the wire, resumed past its renew deadline, sent the round's apply before the cancel
    scope whose deadline had passed cancelled the round: the gate had asked the fence before the first
    write, not again before the apply. The cluster's client asks right before each write it sends
    (`kube.Transport.may_write`, set by the engine for a replica)."""
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster(CLUSTER)
    repo.bundle("web", [configmap("one", colour="blue")], namespace="web", selector={})
    first = repo.commit("blue")
    fence = fencing.Fence(lease=LEASE, epoch=7)
    owns, stall = [True], [False]

    async def main(revision: str, seen: str) -> reconcile.ClusterResult:
        parsed, targets, _ = await sync.prepare(sync_request(repo.root, sim.kubeconfig, instance="fleet"))
        claim = inventory.Claim(source=source.identity(repo.root), revision=revision, observed_at=seen)
        c = client(sim, "a-1")
        c.may_write = lambda: owns[0]  # as the engine sets it: the replica's ownership on the clock

        def wrote(verb: str, ref: model.ObjectRef, answer: Any) -> None:
            if stall[0] and ref.name.startswith("fleet-inventory"):
                owns[0] = False  # the stall: its lease is past the renew deadline once the write is answered

        c.on_write = wrote
        try:
            return await reconcile.reconcile_cluster(
                c,
                parsed.clusters[CLUSTER],
                targets[CLUSTER],
                options=reconcile.Options(wait=False, claim=claim, fence=lambda: fence if owns[0] else None),
            )
        finally:
            await c.aclose()

    assert anyio.run(main, first, "2026-12-07T19:00:00Z").state is model.State.SYNCED
    assert [w for w in writes_of(sim, "a-1") if w.endswith("/configmaps/one")]
    stall[0] = True
    repo.bundle("web", [configmap("one", colour="green"), configmap("two")], namespace="web", selector={})
    second = repo.commit("green, and a new object")
    before = len(writes_of(sim, "a-1"))
    result = anyio.run(main, second, "2026-12-07T19:01:00Z")
    after = writes_of(sim, "a-1")[before:]
    assert [w for w in after if "fleet-inventory" in w], after  # the inventory was written, under the fence
    assert [w for w in after if "fleet-inventory" not in w] == []  # nothing after it
    assert result.fenced, result
    live = live_objects(sim, CLUSTER, namespace="web")
    assert live["one"]["data"] == {"colour": "blue"}
    assert "two" not in live
