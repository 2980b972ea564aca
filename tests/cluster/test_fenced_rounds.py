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
from fleet.clients import kube, management
from fleet.cluster import reconcile
from fleet.core import fencing, model
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
