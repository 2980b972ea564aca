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
    repo.bundle("base", [configmap("one", namespace="default")], selector={})
    repo.commit("second: the record is written again over the version read")
    sim.faults_sync("c1", {"status": 409, "method": "PATCH", "path": "configmaps/fleet-revision-"})
    got = sync(sim, repo)
    assert got.state is model.State.FAILED and got.retriable, got
    assert "written by another controller of the same source during this round" in got.message
