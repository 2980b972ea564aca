"""`fleet sync` under cluster faults injected with the sim's fault rules (docs/reliability.md, RELIABILITY 12-15, 19)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core import inventory, model
from fleet.sim import testing
from tests.support.reconcile import FLEET, GitOpsRepo, configmap, live_objects, sync_in_process


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["good-1", "bad-1", "good-2"]) as handle:
        yield handle


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    r = GitOpsRepo(tmp_path / "repo")
    for name in ("good-1", "bad-1", "good-2"):
        r.cluster(name, labels={"env": "prod"})
    return r


def inventory_refs(sim: testing.SimHandle, cluster: str, bundle: str) -> set[str]:
    cms = live_objects(sim, cluster, namespace=model.INVENTORY_NAMESPACE)
    cm = cms.get(model.inventory_name(instance="fleet", bundle=bundle))
    if cm is None:
        return set()
    return {str(r) for r in inventory.decode(cm, instance="fleet").refs}


@pytest.mark.parametrize("fault", [{"hang": True}, {"refuse": True}])
def test_a_hanging_or_refusing_cluster_is_reported_unreachable_while_the_others_finish(
    sim: testing.SimHandle, repo: GitOpsRepo, fault: dict[str, bool]
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two")
    sim.faults_sync("bad-1", fault)
    result = sync_in_process(
        repo.root, sim.kubeconfig, instance="fleet", request_timeout=1.0, retry_budget=2.0
    )
    sim.clear_faults_sync("bad-1")
    assert not result.ok
    bad = result.clusters["bad-1"]
    assert bad.state is model.State.UNREACHABLE
    assert bad.bundles["web"].state is model.State.UNREACHABLE
    assert "unreachable" in bad.message
    for good in ("good-1", "good-2"):
        assert result.clusters[good].state is model.State.SYNCED
        assert "two" not in live_objects(sim, good, namespace="web")
    assert "two" in live_objects(sim, "bad-1", namespace="web")  # nothing pruned from unknown state


def test_429_with_retry_after_is_honoured_and_the_sync_succeeds(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    sim.faults_sync("bad-1", {"status": 429, "retryAfter": 1, "method": "PATCH", "count": 2})
    started = time.monotonic()
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", retry_budget=10.0)
    elapsed = time.monotonic() - started
    assert result.ok
    journal = sim.journal_sync("bad-1")
    statuses = [r["status"] for r in journal if r["method"] == "PATCH"]
    assert statuses[:2] == [429, 429]
    assert all(s in (200, 201) for s in statuses[2:])
    assert elapsed >= 2.0  # two Retry-After: 1 waits, at least


def test_a_503_in_the_middle_of_an_apply_skips_the_prune_and_the_next_sync_converges(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap(f"c{i}") for i in range(6)], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle(
        "web",
        [configmap(f"c{i}", v="2") for i in range(1, 6)] + [configmap("new")],
        namespace="web",
        selector={"env": "prod"},
    )
    repo.commit("change all, drop c0, add new")
    sim.faults_sync("bad-1", {"status": 503, "method": "PATCH", "path": "configmaps/c3$"})
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet", retry_budget=1.0)
    assert not result.ok
    web = result.clusters["bad-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert any("ConfigMap/web/c3" in p for p in web.problems)
    assert web.changes.count(model.Action.DELETED) == 0
    live = live_objects(sim, "bad-1", namespace="web")
    assert "c0" in live and "new" in live  # applied what it could, pruned nothing
    refs = inventory_refs(sim, "bad-1", "web")
    assert {"ConfigMap/web/c0", "ConfigMap/web/new"} <= refs  # the union stays recorded
    for good in ("good-1", "good-2"):
        assert "c0" not in live_objects(sim, good, namespace="web")

    sim.clear_faults_sync("bad-1")
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    live = live_objects(sim, "bad-1", namespace="web")
    assert "c0" not in live and live["c3"]["data"] == {"v": "2"}
    assert "ConfigMap/web/c0" not in inventory_refs(sim, "bad-1", "web")


def test_a_refused_delete_stays_in_the_inventory_and_is_reported(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("one")], namespace="web", selector={"env": "prod"})
    repo.commit("drop two")
    sim.faults_sync("bad-1", {"status": 403, "method": "DELETE"})
    since = sim.journal_sync("bad-1")[-1]["seq"]
    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert not result.ok
    web = result.clusters["bad-1"].bundles["web"]
    assert web.state is model.State.FAILED
    assert any("ConfigMap/web/two" in p and "delete failed" in p for p in web.problems)
    deletes = [r for r in sim.journal_sync("bad-1", since=since) if r["method"] == "DELETE"]
    assert len(deletes) == 1  # a 403 is not retried (kr8s alone would send it four times)
    assert "ConfigMap/web/two" in inventory_refs(sim, "bad-1", "web")
    assert "two" in live_objects(sim, "bad-1", namespace="web")

    sim.clear_faults_sync("bad-1")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    assert "two" not in live_objects(sim, "bad-1", namespace="web")
    assert "ConfigMap/web/two" not in inventory_refs(sim, "bad-1", "web")


def test_a_sync_killed_mid_apply_leaves_no_orphan_and_the_next_sync_converges(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap(f"old{i}") for i in range(10)], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    desired = [configmap(f"new{i}") for i in range(30)] + [configmap(f"old{i}") for i in range(5)]
    repo.bundle("web", desired, namespace="web", selector={"env": "prod"})
    repo.commit("replace most")
    for name in ("good-1", "bad-1", "good-2"):
        sim.faults_sync(name, {"latencyMs": 100, "method": "PATCH"})
    since = {name: sim.journal_sync(name)[-1]["seq"] for name in ("good-1", "bad-1", "good-2")}
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.Popen(
        [*FLEET, "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--no-wait"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            applied = [r for r in sim.journal_sync("bad-1", since=since["bad-1"]) if r["method"] == "PATCH"]
            if len(applied) >= 6:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    mid = live_objects(sim, "bad-1", namespace="web")
    assert any(n.startswith("new") for n in mid) and not all(f"new{i}" in mid for i in range(30))
    for name in ("good-1", "bad-1", "good-2"):
        sim.clear_faults_sync(name)

    result = sync_in_process(repo.root, sim.kubeconfig, instance="fleet")
    assert result.ok
    wanted = {o["metadata"]["name"] for o in desired}
    for name in ("good-1", "bad-1", "good-2"):
        live = live_objects(sim, name, namespace="web")
        owned = {
            n
            for n, o in live.items()
            if (o["metadata"].get("labels") or {}).get(model.LABEL_OWNER) == "fleet"
        }
        assert owned == wanted  # converged: nothing desired missing, no orphan left
        assert inventory_refs(sim, name, "web") == {f"ConfigMap/web/{n}" for n in wanted}
        deletes = [r for r in sim.journal_sync(name, since=since[name]) if r["method"] == "DELETE"]
        assert {r["path"].rsplit("/", 1)[1] for r in deletes} <= {f"old{i}" for i in range(5, 10)}


def test_a_sync_killed_mid_prune_leaves_no_orphan_and_the_next_sync_finishes_the_prune(
    sim: testing.SimHandle, repo: GitOpsRepo
) -> None:
    repo.bundle("web", [configmap(f"c{i}") for i in range(30)], namespace="web", selector={"env": "prod"})
    repo.commit("first")
    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    repo.bundle("web", [configmap("c0"), configmap("fresh")], namespace="web", selector={"env": "prod"})
    repo.commit("drop 29, add one")
    sim.faults_sync("bad-1", {"latencyMs": 100, "method": "DELETE"})
    since = sim.journal_sync("bad-1")[-1]["seq"]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.Popen(
        [*FLEET, "sync", str(repo.root), "--kubeconfig", str(sim.kubeconfig), "--no-wait"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len([r for r in sim.journal_sync("bad-1", since=since) if r["method"] == "DELETE"]) >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    sim.clear_faults_sync("bad-1")
    mid = live_objects(sim, "bad-1", namespace="web")
    assert "fresh" in mid and len([n for n in mid if n.startswith("c")]) > 1  # killed half-way
    assert {f"ConfigMap/web/{n}" for n in mid if n != "kube-root-ca.crt"} <= inventory_refs(
        sim, "bad-1", "web"
    )

    assert sync_in_process(repo.root, sim.kubeconfig, instance="fleet").ok
    live = live_objects(sim, "bad-1", namespace="web")
    assert set(live) - {"kube-root-ca.crt"} == {"c0", "fresh"}
    assert inventory_refs(sim, "bad-1", "web") == {"ConfigMap/web/c0", "ConfigMap/web/fresh"}
