"""What the engine hands each round and each cluster's watch (`fleet.controller.workers`): the real
`fleet.controller.engine.Engine` in-process against an in-process `fleet sim` over HTTP, following a real
git repository. The objects the watch repairs are those of the revision the cluster's round applied: the
newest revision's, or an older one a rollout still holds the cluster at."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube, statedb
from fleet.cluster.results import BundleResult, ClusterResult
from fleet.core import model
from fleet.sim import testing
from tests.controller.test_rounds_per_commit import rounds
from tests.support.inprocess import NAMES, NS, clusters_sim, running
from tests.support.reconcile import GitOpsRepo, configmap, live_objects

__all__ = ["clusters_sim"]  # the fixture `sim`

WAVES = {
    "waves": [{"name": "canary", "placement": {"clusters": ["c1"]}}, {"name": "rest", "approval": "before"}]
}


def _repo(root: Path, version: str) -> GitOpsRepo:
    repo = GitOpsRepo(root)
    for name in NAMES:
        repo.cluster(name, labels={"web": "yes"})
    _web(repo, version, rollout=None)
    repo.bundle("base", [configmap("base-config", namespace="base")], namespace="base", clusters=NAMES)
    repo.commit("start")
    return repo


def _web(repo: GitOpsRepo, version: str, *, rollout: Any = WAVES) -> None:
    objects = [configmap("web-config", namespace=NS, version=version), configmap("web-static", namespace=NS)]
    spec = {"rollout": rollout} if rollout else {}
    repo.bundle("web", objects, namespace=NS, selector={"web": "yes"}, **spec)


def _data(rt: Any, name: str) -> Any:
    return next(o["data"] for ref, o in rt.objects.items() if ref.name == name)


async def _edit(sim: testing.SimHandle, cluster: str, value: str) -> None:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    client = kube.Client(
        cluster=cluster, context=kc.context(cluster), settings=kube.Settings(retry_budget=3.0)
    )
    try:
        path = f"/api/v1/namespaces/{NS}/configmaps/web-config"
        body = {"data": {"version": value}}
        await client.request("PATCH", path, what=path, body=body, content_type="application/merge-patch+json")
    finally:
        await client.aclose()


async def _test_a_cluster_a_rollout_holds_at_the_older_revision_has_that_revisions_objects_repaired(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = _repo(tmp_path / "repo", "1")
    async with running(tmp_path, sim, repo) as run:
        _web(repo, "2")
        repo.commit("web 2")
        run.engine.trigger_fetch(reason="test")
        clusters = run.engine.clusters
        await run.until(
            lambda doc: live_objects(sim, "c1", namespace=NS)["web-config"]["data"] == {"version": "2"},
            "the canary applied",
        )
        for name in ("c2", "c3"):  # a round at the new revision (a resync), held at the old one
            before = rounds(run.engine, name)
            run.engine._wake(clusters[name], reason="resync")
            await run.until(lambda doc, n=name, b=before: rounds(run.engine, n) > b, f"a round of {name}")
        assert _data(clusters["c1"], "web-config") == {"version": "2"}
        for name in ("c2", "c3"):  # the rest wave waits for approval: held at revision 1
            assert _data(clusters[name], "web-config") == {"version": "1"}, name
        await _edit(sim, "c2", "edited")
        await _edit(sim, "c1", "edited")
        await run.until(
            lambda doc: (
                live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "1"}
                and live_objects(sim, "c1", namespace=NS)["web-config"]["data"] == {"version": "2"}
            ),
            "drift repaired to each cluster's revision",
        )


def test_a_cluster_a_rollout_holds_at_the_older_revision_has_that_revisions_objects_repaired(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_cluster_a_rollout_holds_at_the_older_revision_has_that_revisions_objects_repaired,
        tmp_path,
        sim,
    )


async def _test_a_rounds_log_line_counts_what_it_did_by_action(
    tmp_path: Path, sim: testing.SimHandle, caplog: pytest.LogCaptureFixture
) -> None:
    repo = _repo(tmp_path / "repo", "1")
    async with running(tmp_path, sim, repo) as run:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fleet.engine"):
            _web(repo, "2", rollout=None)
            await run.commit(repo, "web 2")
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cluster c1: Synced")]
        # Each action once, in the order of model.Action, with its count (the changed object configured).
        assert any(
            re.fullmatch(r"cluster c1: Synced \(configured 1, unchanged [12]\)", line) for line in lines
        ), lines


def test_a_rounds_log_line_counts_what_it_did_by_action(
    tmp_path: Path, sim: testing.SimHandle, caplog: pytest.LogCaptureFixture
) -> None:
    anyio.run(_test_a_rounds_log_line_counts_what_it_did_by_action, tmp_path, sim, caplog)


def test_a_cluster_results_changes_are_its_bundles_then_its_removed_bundles_in_order() -> None:
    def change(name: str, action: model.Action) -> model.Change:
        return model.Change(model.ObjectRef("", "v1", "ConfigMap", NS, name), action)

    a = BundleResult("a", model.State.SYNCED, model.ChangeSet((change("1", model.Action.CONFIGURED),)))
    b = BundleResult("b", model.State.SYNCED, model.ChangeSet((change("2", model.Action.UNCHANGED),)))
    gone = BundleResult("old", model.State.SYNCED, model.ChangeSet((change("3", model.Action.DELETED),)))
    result = ClusterResult("c1", model.State.SYNCED, bundles={"a": a, "b": b}, removed={"old": gone})
    assert [c.ref.name for c in result.changes.changes] == ["1", "2", "3"]
    assert result.changes.count(model.Action.CONFIGURED) == 1
    assert result.changes is result.changes  # made once


async def _test_rounds_that_end_while_the_database_is_busy_are_saved_together_each_as_it_left_its_cluster(
    tmp_path: Path, sim: testing.SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, ...]] = []
    record = statedb.StateStore.record_clusters

    def counted(store: statedb.StateStore, rounds: Any) -> None:
        writes.append(tuple(r.cluster.name for r in rounds))
        record(store, rounds)

    repo = _repo(tmp_path / "repo", "1")
    async with running(tmp_path, sim, repo) as run:
        eng = run.engine
        sha = str(repo.repo.head.target)
        monkeypatch.setattr(statedb.StateStore, "record_clusters", counted)
        async with anyio.create_task_group() as tg:
            async with eng._db_limiter:  # the database busy with another write while three rounds end
                for name in NAMES:
                    tg.start_soon(eng._persist_cluster, eng.clusters[name])
                await anyio.wait_all_tasks_blocked()
                assert writes == []
        assert writes == [tuple(NAMES)], writes  # once each, in the order they ended: one transaction
        await eng._persist_cluster(eng.clusters["c1"])  # alone: at once
        assert writes[1:] == [("c1",)], writes
        saved = eng.store.load()
        for name in NAMES:
            assert saved.clusters[name].revision == sha and saved.clusters[name].state == "Synced"
            assert saved.targets[(name, "web")].revision == sha


def test_rounds_that_end_while_the_database_is_busy_are_saved_together_each_as_it_left_its_cluster(
    tmp_path: Path, sim: testing.SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    anyio.run(
        _test_rounds_that_end_while_the_database_is_busy_are_saved_together_each_as_it_left_its_cluster,
        tmp_path,
        sim,
        monkeypatch,
    )
