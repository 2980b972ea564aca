"""Which failed rounds say a retry can fix them (`BundleResult.retriable`, docs/rollouts.md "Which failures
are retried"): decided where the errors are mapped, over HTTP against `fleet sim` with its fault rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core import model
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, sync_in_process

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["c1"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("c1", labels={"env": "prod"})
    r.bundle(
        "base", [configmap("one", namespace="default"), configmap("two", namespace="default")], selector={}
    )
    r.commit("first")
    return r


def sync(sim: testing.SimHandle, repo: GitOpsRepo) -> Any:
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", retry_budget=1.0)
    return result.clusters["c1"].bundles["base"]


def test_an_apply_answered_503_past_the_retry_budget_is_a_retriable_failure(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    sim.faults_sync("c1", {"status": 503, "method": "PATCH", "path": "configmaps/one$"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and got.retriable, got
    assert got.message.startswith("ConfigMap/default/one: ") and "unable to handle" in got.message, got


@pytest.mark.parametrize(("status", "why"), [(422, "invalid"), (403, "forbidden")])
def test_an_apply_refused_for_a_reason_a_retry_cannot_fix_is_not_retriable(
    sim: testing.SimHandle, repo: GitOpsRepo, status: int, why: str
) -> None:
    sim.faults_sync("c1", {"status": status, "method": "PATCH", "path": "configmaps/one$"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and not got.retriable, (why, got)


def test_a_bundle_with_one_retriable_and_one_final_failure_is_not_retriable(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    sim.faults_sync("c1", {"status": 503, "method": "PATCH", "path": "configmaps/one$"})
    sim.faults_sync("c1", {"status": 422, "method": "PATCH", "path": "configmaps/two$"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and not got.retriable, got


def test_a_409_on_fleets_own_inventory_is_a_race_retried_not_a_refusal(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    assert sync(sim, repo).state is model.State.SYNCED
    repo.bundle(
        "base", [configmap("one", namespace="default"), configmap("three", namespace="default")], selector={}
    )
    repo.commit("second: the inventory is written again over the version read")
    inventory = model.inventory_name(instance="fleet", bundle="base")
    sim.faults_sync("c1", {"status": 409, "method": "PATCH", "path": f"configmaps/{inventory}$"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and got.retriable, got
    assert f"ConfigMap/fleet-system/{inventory}: changed by another writer during this round" in got.message


def test_a_409_on_fleets_revision_record_is_a_race_retried(sim: testing.SimHandle, repo: GitOpsRepo) -> None:
    assert sync(sim, repo).state is model.State.SYNCED
    repo.bundle(
        "base", [configmap("one", namespace="default"), configmap("three", namespace="default")], selector={}
    )
    repo.commit("second: a delete, so the record is created before it")
    assert sync(sim, repo).state is model.State.SYNCED
    repo.bundle("base", [configmap("one", namespace="default")], selector={})
    repo.commit("third: another delete, the record written again over the version read")
    sim.faults_sync("c1", {"status": 409, "method": "PATCH", "path": "configmaps/fleet-revision-"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and got.retriable, got
    assert "written by another controller of the same source during this round" in got.message


def test_every_object_of_a_bundle_larger_than_its_writers_is_applied_or_named_once(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # A phase's writes are shared by a few writers (`apply.writers`), not a task per object: none is
    # lost or sent twice, and writes retried until their budget runs out hold up none of the others.
    r = GitOpsRepo(tmp_path / "many")
    r.cluster("c1", labels={"env": "prod"})
    names = [f"cm-{i:02d}" for i in range(40)]
    r.bundle("base", [configmap(n, namespace="default") for n in names], selector={})
    r.commit("forty")
    for n in names[:10]:
        sim.faults_sync("c1", {"status": 503, "method": "PATCH", "path": f"configmaps/{n}$"})
    result = sync_in_process(r.root, sim.kubeconfig, instance="fleet", retry_budget=1.0)
    got = result.clusters["c1"].bundles["base"]
    by_object = {str(c.ref): c.action for c in got.changes.changes}
    assert len(got.changes.changes) == 40, got.changes
    assert {o for o, a in by_object.items() if a is model.Action.FAILED} == {
        f"ConfigMap/default/{n}" for n in names[:10]
    }
    assert {o for o, a in by_object.items() if a is model.Action.CREATED} == {
        f"ConfigMap/default/{n}" for n in names[10:]
    }
    patches = [e for e in sim.journal_sync("c1") if e["method"] == "PATCH" and "/cm-" in e["path"]]
    assert sum(1 for e in patches if e.get("status") == 201) == 30  # each written once
    assert got.state is model.State.FAILED and got.retriable
