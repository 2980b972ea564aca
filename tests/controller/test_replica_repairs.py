"""A replica's drift repairs between adopting a revision and its first round of a cluster at it.

The real `fleet.controller.engine.Engine` in-process against an in-process `fleet sim` over HTTP, following
a real git repository; another replica of the same source is played by the test (its revision record and
its apply, as `fleet serve` writes them). The engine adopts a revision for every cluster at once, but the
objects its watch of a cluster repairs stay those of the last round there until its next round: a repair
must be judged with the claim of the revision those objects came from, or a replica that has just fetched
the newer commit puts the older objects back over the other replica's apply (docs/reconcile.md, "Replicas
of one source: the newer revision wins").
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from fleet.core import drift, inventory
from fleet.sim import testing
from tests.support.inprocess import NS, clusters_sim, other_replica_writes, running, web_repo
from tests.support.reconcile import configmap, live_objects, writes

__all__ = ["clusters_sim"]  # the fixture `sim`

WEB_CONFIG = f"/api/v1/namespaces/{NS}/configmaps/web-config"


async def _test_a_replica_that_adopted_the_newer_revision_never_repairs_a_cluster_back_to_the_older_one(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        # c1's next round reads the server and waits at its first read: the engine adopts the new revision
        # while c1's objects are still the last round's (the first revision's).
        await sim.faults(
            "c1", {"method": "GET", "watch": False, "path": "^/api/v1/namespaces$", "hold": True}
        )
        eng._wake(eng.clusters["c1"], reason="resync")
        deadline = time.monotonic() + 30
        while not any(r["held"] for r in await sim.fault_rules("c1")):
            assert time.monotonic() < deadline, "c1's round never read the Namespaces"
            await anyio.sleep(0.05)
        repo.bundle(
            "web",
            [
                configmap("web-config", namespace=NS, version="2"),
                configmap("web-static", namespace=NS),
                configmap("web-extra", namespace=NS),
            ],
            namespace=NS,
            selector={"web": "yes"},
        )
        second = repo.commit("web 2")
        eng.trigger_fetch(reason="test")
        deadline = time.monotonic() + 30
        while eng.claim is None or eng.claim.revision != second:
            assert time.monotonic() < deadline, "the engine never adopted the second revision"
            await anyio.sleep(0.05)
        assert eng.clusters["c1"].scope is not None, "c1's round at the first revision still runs"
        # the newer replica applies exactly what this one applies at the second revision
        assert eng.desired is not None
        changed = next(
            obj
            for ref, obj in drift.desired_objects(eng.desired.targets["c1"], instance="fleet").items()
            if ref.name == "web-config"
        )
        journal = await sim.journal("c1")
        mark = journal[-1]["seq"]
        other = inventory.Claim(
            source=eng.claim.source, revision=second, observed_at=inventory.now_rfc3339(), writer="other"
        )
        await other_replica_writes(sim, "c1", other, changed)
        await anyio.sleep(
            2.0
        )  # the engine's watch sees the change (drift to its older objects) and judges it
        assert any(r["held"] for r in await sim.fault_rules("c1")), "c1's round at the first revision ended"
        live = live_objects(sim, "c1", namespace=NS)["web-config"]
        assert live["data"] == {"version": "2"}, [
            (r["method"], r["path"]) for r in writes(await sim.journal("c1", since=mark))
        ]
        await sim.clear_faults("c1")
        await run.synced_at(second)
        await anyio.sleep(0.5)
        done = [(r["method"], r["path"]) for r in writes(await sim.journal("c1", since=mark))]
        # the other replica's record and apply; the engine's own round at the second revision has nothing
        # left to write
        assert [p for _, p in done if p == WEB_CONFIG] == [WEB_CONFIG], done
        assert live_objects(sim, "c1", namespace=NS)["web-config"]["data"] == {"version": "2"}


def test_a_replica_that_adopted_the_newer_revision_never_repairs_a_cluster_back_to_the_older_one(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_replica_that_adopted_the_newer_revision_never_repairs_a_cluster_back_to_the_older_one,
        tmp_path,
        sim,
    )
