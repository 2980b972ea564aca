"""`fleet.cli.syncworkers`, the parts that need no process: a worker's deadline, what crosses its pipe, and
a worker's life (`serve`) run in this process over a real pipe and `fleet sim` over HTTP. The worker
processes themselves are tested end to end in tests/e2e/test_sync_workers_e2e.py."""

from __future__ import annotations

import multiprocessing
import pickle
import types
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.cli import sync, syncworkers
from fleet.clients import kube
from fleet.cluster import reconcile
from fleet.core import model, pipeline, plan
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap, live_objects, sync_request


def _work(clusters: int, *, concurrency: int, wait: bool) -> syncworkers.Work:
    names = [f"c-{i}" for i in range(clusters)]
    options = reconcile.Options(
        concurrency=concurrency, wait=wait, health_timeout=30.0, cluster_deadline=100.0
    )
    target = plan.Target("web", depends_on=())
    return syncworkers.Work(
        revision="r1",
        clusters={n: model.Cluster(n) for n in names},
        targets={n: {"web": target} for n in names},
        protected={},
        kubeconfig=kube.Kubeconfig(contexts={}),
        settings=kube.Settings(),
        options=options,
    )


def test_a_workers_deadline_is_its_batches_of_rounds_plus_a_margin() -> None:
    # 5 clusters, 2 at once: 3 batches, each a round (100 s) and its health wait (30 s) at most.
    waiting = syncworkers.deadline(_work(5, concurrency=2, wait=True))
    assert waiting == 3 * (100.0 + 30.0) + syncworkers.WORKER_MARGIN
    assert syncworkers.deadline(_work(5, concurrency=8, wait=False)) == 100.0 + syncworkers.WORKER_MARGIN


def test_the_work_and_results_cross_the_pipe_whole_read_only_mappings_included() -> None:
    cluster = model.Cluster(
        "prod-1", labels=types.MappingProxyType({"env": "prod"}), facts=types.MappingProxyType({"a": 1})
    )
    with_proxies = syncworkers.Work(
        revision="r1",
        clusters=types.MappingProxyType({"prod-1": cluster}),
        targets={"prod-1": {"web": plan.Target("web", error="bundle web: broken")}},
        protected={"old": "bundle old: broken"},
        kubeconfig=kube.Kubeconfig(contexts={}),
        settings=kube.Settings(),
        options=reconcile.Options(concurrency=3),
    )
    back = pickle.loads(ForkingPickler.dumps(with_proxies))
    assert back == with_proxies
    assert isinstance(back.clusters["prod-1"].labels, types.MappingProxyType)
    result = reconcile.ClusterResult(
        "prod-1",
        model.State.FAILED,
        bundles={"web": reconcile.BundleResult("web", model.State.FAILED, message="bundle web: broken")},
        warnings=("a warning",),
        requests=7,
    )
    assert pickle.loads(ForkingPickler.dumps(("cluster", result))) == ("cluster", result)


def test_a_worker_told_there_is_nothing_to_do_ends_at_once_and_quietly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent, child = multiprocessing.Pipe()
    parent.send(None)
    assert syncworkers.serve(child) == 0
    with pytest.raises(EOFError):  # nothing sent: the end of the pipe
        parent.recv()
    assert capsys.readouterr() == ("", "")


def test_a_worker_that_fails_sends_why_and_exits_1_without_printing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent, child = multiprocessing.Pipe()
    parent.send("not a Work")
    assert syncworkers.serve(child) == 1
    kind, why = parent.recv()
    assert kind == "crashed"
    assert why.startswith("AttributeError: ")
    assert capsys.readouterr() == ("", "")


def test_a_worker_reconciles_only_its_clusters_and_sends_each_result(
    fleet_sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("sim-001")
    repo.cluster("sim-002")
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("first")
    request = sync_request(repo.root, fleet_sim.kubeconfig, instance="fleet")
    parsed, targets, kubeconfig = anyio.run(sync.prepare, request)
    work = syncworkers.Work(
        revision=parsed.revision,
        clusters={"sim-001": parsed.clusters["sim-001"]},
        targets={"sim-001": targets["sim-001"]},
        protected=pipeline.all_protected(parsed),
        kubeconfig=kubeconfig,
        settings=sync.settings_of(request),
        options=reconcile.Options(wait=False, cluster_deadline=60.0),
    )
    parent, child = multiprocessing.Pipe()
    parent.send(work)
    assert syncworkers.serve(child) == 0
    kind, result = parent.recv()
    assert kind == "cluster"
    assert result.cluster == "sim-001"
    assert result.state is model.State.SYNCED
    assert result.bundles["web"].changes.count(model.Action.CREATED) == 2
    with pytest.raises(EOFError):  # one message per cluster, then the end of the pipe
        parent.recv()
    assert set(live_objects(fleet_sim, "sim-001", namespace="web")) >= {"one", "two"}
    assert fleet_sim.journal_sync("sim-002") == []


def _two_cluster_repo(tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(tmp_path / "repo")
    repo.cluster("sim-001")
    repo.cluster("sim-002")
    repo.bundle("web", [configmap("one"), configmap("two")], namespace="web", selector={})
    repo.commit("first")
    return repo


def _run_alone(
    request: sync.Request, kubeconfig: kube.Kubeconfig | None = None
) -> tuple[dict[str, reconcile.ClusterResult], list[str]]:
    """`Workers.run` with no forked worker: the sync process reconciles the one share itself."""
    parsed, targets, loaded = anyio.run(sync.prepare, request)
    done: list[str] = []
    results = anyio.run(
        lambda: syncworkers.Workers([]).run(
            parsed,
            targets,
            pipeline.all_protected(parsed),
            kubeconfig=loaded if kubeconfig is None else kubeconfig,
            settings=sync.settings_of(request),
            options=reconcile.Options(wait=False, cluster_deadline=60.0),
            on_done=lambda r: done.append(r.cluster),
        )
    )
    return results, done


def test_the_sync_process_is_the_first_worker_and_reconciles_its_share_itself(
    fleet_sim: testing.SimHandle, tmp_path: Path
) -> None:
    repo = _two_cluster_repo(tmp_path)
    request = sync_request(repo.root, fleet_sim.kubeconfig, instance="fleet")
    results, done = _run_alone(request)
    assert sorted(done) == ["sim-001", "sim-002"]
    for name in ("sim-001", "sim-002"):
        assert results[name].state is model.State.SYNCED
        assert set(live_objects(fleet_sim, name, namespace="web")) >= {"one", "two"}


def test_a_failure_of_the_sync_processs_own_share_fails_its_clusters_naming_it(
    fleet_sim: testing.SimHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _two_cluster_repo(tmp_path)
    request = sync_request(repo.root, fleet_sim.kubeconfig, instance="fleet")
    broken: Any = object()  # not a kubeconfig: opening the clients fails (a bug, as far as the share knows)
    results, done = _run_alone(request, kubeconfig=broken)
    assert sorted(done) == ["sim-001", "sim-002"]
    for name in ("sim-001", "sim-002"):
        assert results[name].state is model.State.FAILED
        assert "sync worker 1 (pid " in results[name].message
        assert "the fleet sync process) failed: AttributeError" in results[name].message
        assert all(b.state is model.State.FAILED for b in results[name].bundles.values())
    assert "clusters it did not report: sim-001, sim-002" in capsys.readouterr().err
    assert fleet_sim.journal_sync("sim-001") == []


@pytest.mark.slow  # starts a python process
def test_a_one_process_sync_tunes_its_cycle_collector_as_a_worker_does(tmp_path: Path) -> None:
    # What the command process holds when it starts is frozen and collections are rare (measured in
    # docs/benchmarks.md); checked in a child process, whose collector the test may change.
    import subprocess
    import sys

    code = (
        "import gc, sys\n"
        "sys.argv = ['fleet', 'sync', '/nonexistent/repo', '--kubeconfig', '/nonexistent/kubeconfig']\n"
        "from fleet.cli import syncworkers\n"
        "seen = []\n"
        "original = syncworkers.lean_collector\n"
        "def spy():\n"
        "    original()\n"
        "    seen.append((gc.get_threshold(), gc.get_freeze_count() > 0))\n"
        "syncworkers.lean_collector = spy\n"
        "import fleet.cli\n"
        "try:\n"
        "    fleet.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == f"[({syncworkers.WORKER_GC_THRESHOLDS!r}, True)]"
