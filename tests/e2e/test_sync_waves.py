"""`fleet sync --waves`: each bundle's rollout in the foreground, as the real CLI on `fleet sim` (docs/rollouts.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.sim import testing
from fleet.sim.storage import store
from tests.support.reconcile import GitOpsRepo, run_fleet

pytestmark = pytest.mark.slow

CLUSTERS = ["dev-1", "prod-1", "prod-2"]
WAVES = {
    "waves": [
        {"name": "canary", "placement": {"clusters": ["dev-1"]}},
        {"name": "rest", "maxConcurrency": "100%"},
    ],
    "progressDeadline": "20s",
}


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    settings = dataclasses.replace(store.Settings(), workload_delay=0.5)
    with testing.serving(names=CLUSTERS, settings=settings) as handle:
        yield handle


def deployment(*, failed: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web"}
    if failed:
        meta["annotations"] = {"sim.fleet.dev/failed": "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "w", "image": "w:1"}]},
            },
        },
    }


def repo_with(tmp_path: Path, *, failed: bool) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    for c in CLUSTERS:
        repo.cluster(c, labels={"env": c.split("-")[0]})
    repo.bundle("web", [deployment(failed=failed)], namespace="web", selector={}, rollout=WAVES)
    repo.commit("web")
    return repo


def deployment_writes(sim: testing.SimHandle, cluster: str) -> list[dict[str, Any]]:
    return [
        e
        for e in sim.journal_sync(cluster)
        if e["mutated"] and "/deployments" in e["path"] and e["method"] in ("PATCH", "PUT", "POST")
    ]


def test_sync_with_waves_applies_wave_after_wave_and_exits_0(tmp_path: Path, sim: testing.SimHandle) -> None:
    repo = repo_with(tmp_path, failed=False)
    out = run_fleet(
        "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--waves", "--format", "json"
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["stopped"] is None
    assert doc["rollouts"]["web"]["state"] == "Completed"
    canary = deployment_writes(sim, "dev-1")[0]["time"]
    for c in ("prod-1", "prod-2"):
        assert deployment_writes(sim, c)[0]["time"] >= canary + 0.5  # after the canary was healthy


def test_sync_with_waves_halts_after_a_failing_canary_and_touches_no_other_cluster(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = repo_with(tmp_path, failed=True)
    out = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--waves")
    assert out.returncode == 1
    assert "stopped: rollout of web Halted" in out.stderr and "dev-1: degraded" in out.stderr
    assert "Halted" in out.stdout and "fleet rollout resume web" in out.stdout
    assert len(deployment_writes(sim, "dev-1")) == 1
    for c in ("prod-1", "prod-2"):
        assert deployment_writes(sim, c) == [], f"{c} was sent the revision"


def test_sync_with_waves_refuses_no_wait(tmp_path: Path, sim: testing.SimHandle) -> None:
    repo = repo_with(tmp_path, failed=False)
    out = run_fleet("sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--waves", "--no-wait")
    assert out.returncode == 2 and "--waves" in out.stderr


def deployment_answers(sim: testing.SimHandle, cluster: str) -> list[int]:
    return [
        e["status"]
        for e in sim.journal_sync(cluster)
        if e["method"] == "PATCH" and e["path"].endswith("/deployments/web")
    ]


def test_sync_with_waves_retries_a_canary_whose_apply_is_answered_503_and_completes(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    # More 503s than one request's retry budget (1s) absorbs: the canary's rounds fail, retriable, until
    # the API server lets the apply through; the rollout goes on instead of halting.
    sim.faults_sync("dev-1", {"status": 503, "method": "PATCH", "path": "deployments/web", "count": 8})
    repo = repo_with(tmp_path, failed=False)
    out = run_fleet(
        "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--waves", "--retry-budget", "1s",
        "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["stopped"] is None and doc["rollouts"]["web"]["state"] == "Completed"
    answers = deployment_answers(sim, "dev-1")
    assert answers.count(503) == 8 and answers[-1] in (200, 201), answers
    through = deployment_writes(sim, "dev-1")[0]["time"]
    for c in ("prod-1", "prod-2"):
        assert deployment_writes(sim, c)[0]["time"] > through  # sent only after the canary went through


def test_sync_with_waves_halts_at_once_when_the_canarys_apply_is_answered_422(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    sim.faults_sync("dev-1", {"status": 422, "method": "PATCH", "path": "deployments/web"})
    repo = repo_with(tmp_path, failed=False)
    out = run_fleet(
        "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--waves", "--retry-budget", "1s",
        "--format", "json",
    )  # fmt: skip
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    web = doc["rollouts"]["web"]
    assert web["state"] == "Halted"
    assert web["waves"][0]["failed"]["dev-1"]["reason"] == "apply"
    assert "still failing" not in web["waves"][0]["failed"]["dev-1"]["message"]  # not retried to a deadline
    for c in ("prod-1", "prod-2"):
        assert deployment_writes(sim, c) == [], f"{c} was sent the revision"
