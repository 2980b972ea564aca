"""Health after `fleet sync` against the sim's workload status simulation (Deployments, Jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core import model
from fleet.sim import testing
from fleet.sim.storage import store
from tests.support.reconcile import GitOpsRepo, run_fleet, sync_in_process


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["prod-1"], settings=store.Settings(workload_delay=0.3)) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    r.cluster("prod-1", labels={"env": "prod"})
    return r


def deployment(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            },
        },
    }


def job(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "run", "image": "busybox"}]}
            }
        },
    }


def test_a_rolled_out_deployment_and_a_completed_job_make_the_bundle_synced(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [deployment("api"), job("migrate")], namespace="web", selector={})
    repo.commit("first")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True, health_timeout=20)
    web = result.clusters["prod-1"].bundles["web"]
    assert web.state is model.State.SYNCED, web
    assert result.ok


def test_an_unavailable_deployment_is_progressing_and_fails_the_sync_after_its_timeout(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle(
        "web", [deployment("api", **{"sim.fleet.dev/unavailable": "true"})], namespace="web", selector={}
    )
    repo.commit("first")
    proc = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--timeout", "2s")
    assert proc.returncode == 1
    assert "Progressing" in proc.stdout and "Deployment/web/api" in proc.stdout
    no_wait = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--no-wait")
    assert no_wait.returncode == 0, no_wait.stdout + no_wait.stderr


def test_a_deployment_past_its_deadline_and_a_failed_job_are_failed(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle(
        "web",
        [
            deployment("api", **{"sim.fleet.dev/failed": "true"}),
            job("migrate", **{"sim.fleet.dev/failed": "true"}),
        ],
        namespace="web",
        selector={},
    )
    repo.commit("first")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True, health_timeout=20)
    web = result.clusters["prod-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert "Deployment/web/api: progress deadline exceeded" in web.message
    assert "Job/web/migrate: job failed" in web.message


def test_a_fix_forward_of_a_deployment_past_its_deadline_that_the_sim_first_observes_with_the_old_condition_syncs(
    repo: GitOpsRepo,
) -> None:
    """A change of template and replicas is first handled as a scaling whose status still says
    ProgressDeadlineExceeded (the real deployment controller's window, which the sim holds open for its
    workload delay): fleet's apply answer tells it apart from a new failure (docs/reconcile.md, "Health")."""
    failed = deployment("api", **{"sim.fleet.dev/failed": "true"})
    repo.bundle("web", [failed], namespace="web", selector={})
    repo.commit("stuck")
    with testing.serving(names=["prod-1"], settings=store.Settings(workload_delay=1.5)) as sim:
        stuck = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True, health_timeout=20)
        web = stuck.clusters["prod-1"].bundles["web"]
        assert (web.state, web.message) == (
            model.State.FAILED,
            "Deployment/web/api: progress deadline exceeded",
        )
        fixed = deployment("api")
        fixed["spec"]["replicas"] = 3
        fixed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
        repo.bundle("web", [fixed], namespace="web", selector={})
        repo.commit("fix forward")
        result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", wait=True, health_timeout=20)
    web = result.clusters["prod-1"].bundles["web"]
    assert (web.state, web.message) == (model.State.SYNCED, ""), web.message
