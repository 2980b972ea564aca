"""One simulated cluster, a repository with bundle web, and rounds run by controllers holding a given claim
(`fleet.core.inventory.Claim`): the set-up of the tests of sources and claims at the reconcile layer
(tests/cluster/test_sources_reconcile.py, tests/cluster/test_claims_between_writers.py). A test file opts
into the fixtures `sim` and `repo` by importing `claims_sim` and `claims_repo` and listing them in
`__all__`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from fleet.cli import sync
from fleet.clients import kube, source
from fleet.cluster import reconcile
from fleet.core import inventory
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, sync_request

CLUSTER = "c-1"


@pytest.fixture(name="sim")
def claims_sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=[CLUSTER]) as handle:
        yield handle


@pytest.fixture(name="repo")
def claims_repo(tmp_path: Path) -> GitOpsRepo:
    """Cluster `CLUSTER`, bundle web (ConfigMaps one and two in namespace web) on it, committed."""
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster(CLUSTER)
    r.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    r.commit("first")
    return r


def client_for(sim: testing.SimHandle) -> kube.Client:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster=CLUSTER, context=kc.context(CLUSTER), settings=kube.Settings(retry_budget=3.0))


def claim_for(repo: GitOpsRepo, revision: str, seen: str, writer: str = "test") -> inventory.Claim:
    return inventory.Claim(
        source=source.identity(repo.root), revision=revision, observed_at=seen, writer=writer
    )


def one_round(
    sim: testing.SimHandle, repo: GitOpsRepo, claim: inventory.Claim | None, *, yield_to_newer: bool = True
) -> reconcile.ClusterResult:
    """One round of `CLUSTER` at the repository's head by a controller holding `claim`."""

    async def main() -> reconcile.ClusterResult:
        request = sync_request(repo.root, sim.kubeconfig, instance="fleet")
        parsed, targets, _ = await sync.prepare(request)
        options = reconcile.Options(wait=False, claim=claim, yield_to_newer=yield_to_newer)
        client = client_for(sim)
        try:
            return await reconcile.reconcile_cluster(
                client, parsed.clusters[CLUSTER], targets[CLUSTER], options=options
            )
        finally:
            await client.aclose()

    return anyio.run(main)


def last_seq(sim: testing.SimHandle) -> int:
    journal = sim.journal_sync(CLUSTER)
    return journal[-1]["seq"] if journal else 0
