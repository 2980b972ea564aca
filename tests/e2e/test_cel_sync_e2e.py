"""CEL errors at run time, end to end against `fleet sim` over HTTP: a pair whose CEL fails (an evaluation
error, or a cost over its budget) changes nothing of that bundle on that cluster: no apply, no prune."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core import model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_in_process

# Six nested all() over ten elements: far over the 10,000-step budget on every cluster.
RUNAWAY = (
    "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, "
    "[1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, [1,2,3,4,5,6,7,8,9,10].all(f, "
    "a + b + c + d + e + f > 0 && cluster.labels.env == 'prod'))))))"
)


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["prod-1", "dev-1"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("prod-1", labels={"env": "prod"})
    r.cluster("dev-1", labels={"env": "dev"})
    return r


@pytest.mark.slow
@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        (RUNAWAY, "the placement of bundle 'web' exceeded its cost budget of 10,000 steps on this cluster"),
        ("cluster.labels.tier == 'gold'", "no such member in mapping: 'tier'"),
    ],
    ids=["over-the-cost-budget", "evaluation-error"],
)
def test_a_pair_whose_cel_fails_keeps_what_the_cluster_has_and_prunes_nothing(
    sim: testing.SimHandle, repo: GitOpsRepo, expression: str, fragment: str
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", placement={"cel": "cluster.labels.env == 'prod'"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    before = set(live_objects(sim, "prod-1", namespace="web"))
    assert "one" in before

    # The expression now fails on every cluster, and the bundle has a new object and lost the old one.
    repo.bundle("web", [configmap("two")], namespace="web", placement={"cel": expression})
    repo.commit("a failing expression")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert not result.ok
    for cluster in ("prod-1", "dev-1"):
        web = result.clusters[cluster].bundles["web"]
        assert web.state is model.State.FAILED
        assert fragment in web.message
        assert "web" not in result.clusters[cluster].removed  # never read as "no longer placed"
    assert set(live_objects(sim, "prod-1", namespace="web")) == before  # nothing applied, nothing pruned
