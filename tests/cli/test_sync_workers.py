"""`fleet.cli.syncworkers`, the parts that need no process: a worker's deadline and what crosses its pipe.
The workers themselves are tested end to end in tests/e2e/test_sync_workers_e2e.py."""

from __future__ import annotations

import pickle
import types
from multiprocessing.reduction import ForkingPickler

from fleet.cli import syncworkers
from fleet.clients import kube
from fleet.cluster import reconcile
from fleet.core import model, plan


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
