"""How many rounds a commit costs each cluster (docs/benchmarks.md, "fleet serve at scale"): the real
`fleet.controller.engine.Engine` in-process against an in-process `fleet sim` over HTTP, following a real
git repository. The watch event of an object a round applies, arriving while that round still runs, is
no reason for another round: the round reports what it saw, and a look at the cluster's health after it
(a probe, not a round) follows only while its rollout still waits for that health."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.sim import testing
from tests.support.inprocess import NAMES, NS, clusters_sim, running, web_repo
from tests.support.reconcile import configmap

__all__ = ["clusters_sim"]  # the fixture `sim`


def rounds(run_engine: object, cluster: str) -> float:
    registry = run_engine.metrics.registry  # type: ignore[attr-defined]
    return sum(
        s.value
        for metric in registry.collect()
        if metric.name == "fleet_reconciles"
        for s in metric.samples
        if s.name == "fleet_reconciles_total" and s.labels.get("cluster") == cluster
    )


async def _test_a_commit_costs_each_changed_cluster_one_round_even_when_its_apply_is_seen_during_it(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        before = {name: rounds(run.engine, name) for name in NAMES}
        # web-static's apply waits: web-config's watch event comes back while c1's round still runs.
        await sim.faults("c1", {"method": "PATCH", "path": "configmaps/web-static", "latencyMs": 1500})
        repo.bundle(
            "web",
            [
                configmap("web-config", namespace=NS, version="2"),
                configmap("web-static", namespace=NS, version="2"),
                configmap("web-extra", namespace=NS),
            ],
            namespace=NS,
            selector={"web": "yes"},
        )
        await run.commit(repo, "web 2")
        await anyio.sleep(1.0)  # a round woken at the end of the last one would have run by now
        await run.quiet()  # and every round that ran is counted
        after = {name: rounds(run.engine, name) for name in NAMES}
        assert {n: after[n] - before[n] for n in NAMES} == {"c1": 1, "c2": 1, "c3": 0}
        await sim.clear_faults("c1")


def test_a_commit_costs_each_changed_cluster_one_round_even_when_its_apply_is_seen_during_it(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_commit_costs_each_changed_cluster_one_round_even_when_its_apply_is_seen_during_it,
        tmp_path,
        sim,
    )


async def _test_wakes_of_a_cluster_waiting_for_its_turn_make_one_round(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    # At 1,000 clusters a wake waits seconds for a turn (`--concurrency`): a follower's clusters, woken by
    # two of the coordinator's rollout writes a moment apart, each had two rounds where one would do.
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, concurrency=1) as run:
        before = {name: rounds(run.engine, name) for name in NAMES}
        for name in NAMES:  # every round reads the server (a person's request): each holds the turn a while
            await sim.faults(name, {"method": "GET", "path": "configmaps", "latencyMs": 300})
        await run.engine.request_reconcile(cluster=None, bundle=None)
        await anyio.sleep(0.15)  # the first cluster's round holds the only turn; the others wait for it
        await run.engine.request_reconcile(cluster=None, bundle=None)
        with anyio.fail_after(60):
            while sum(rounds(run.engine, n) - before[n] for n in NAMES) < len(NAMES) + 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await anyio.sleep(2.0)  # a further round would have run by now
        after = sorted(rounds(run.engine, n) - before[n] for n in NAMES)
        # The cluster in its round when woken again has one more; those waiting for a turn, one each.
        assert after == [1] * (len(NAMES) - 1) + [2]
        for name in NAMES:
            await sim.clear_faults(name)


def test_wakes_of_a_cluster_waiting_for_its_turn_make_one_round(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_wakes_of_a_cluster_waiting_for_its_turn_make_one_round, tmp_path, sim)
