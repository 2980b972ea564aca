"""A revision this controller's own rollout sent a cluster and then rolled back is not "another writer's"
on that cluster (docs/reconcile.md, "Replicas of one source: the newer revision wins"): when a newer commit
comes before the rollback was written there (the cluster unreachable meanwhile), the cluster, held by the
new rollout at the revision the rollback returns to, is written back to it, not left at the rolled-back
revision as if another writer had put it there.

The real `fleet.controller.engine.Engine` in-process against an in-process `fleet sim`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio

from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support.inprocess import NS, clusters_sim, round_of, running, web_objects, web_repo
from tests.support.reconcile import live_objects

__all__ = ["clusters_sim"]  # the fixture `sim`

WAVES = {
    "waves": [{"name": "canary", "placement": {"clusters": ["c1"]}}, {"name": "rest", "approval": "before"}]
}


async def _test_a_rolled_back_revision_this_controller_sent_is_written_back_after_a_newer_commit(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=5.0) as run:
        eng = run.engine
        first = next(iter(run.status()["clusters"].values()))["revision"]
        repo.bundle("web", web_objects("2"), namespace=NS, selector={"web": "yes"}, rollout=WAVES)
        second = repo.commit("web 2")
        eng.trigger_fetch(reason="test")

        def web_of(doc: dict[str, Any], cluster: str) -> tuple[str, str]:
            web = doc["clusters"][cluster]["bundles"]["web"]
            return web["state"], web["revision"]

        await run.until(lambda doc: web_of(doc, "c1") == ("Synced", second), "c1 at the second revision")
        await eng.rollouts.act("web", ro.Action.APPROVE, actor="ana", wave="rest")
        await run.until(lambda doc: web_of(doc, "c2") == ("Synced", second), "c2 at the second revision")
        # c2 refuses every write when the rollout is rolled back, and when a newer commit comes.
        await sim.faults("c2", {"method": "PATCH", "status": 503, "count": 100000})
        await eng.rollouts.act("web", ro.Action.ROLLBACK, actor="ana", reason="bad")
        await run.until(lambda doc: web_of(doc, "c1") == ("Synced", first), "c1 rolled back")
        repo.bundle("web", web_objects("3"), namespace=NS, selector={"web": "yes"}, rollout=WAVES)
        third = repo.commit("web 3")
        eng.trigger_fetch(reason="test")
        deadline = time.monotonic() + 30
        while eng.claim is None or eng.claim.revision != third:
            assert time.monotonic() < deadline, "the third revision was never taken in"
            await anyio.sleep(0.05)
        eng._wake(eng.clusters["c2"], reason="resync")
        await round_of(eng, "c2", third)  # its round at the third revision, writes refused
        assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {
            "version": "2"
        }  # not rolled back
        await sim.clear_faults("c2")
        eng._wake(eng.clusters["c2"], reason="resync")
        # Held at the first revision until the third's rollout reaches it (a person approves its wave):
        # what this controller rolled back is written back, not left as another writer's.
        await run.until(lambda doc: web_of(doc, "c2") == ("Synced", first), "c2 written back to the first")
        assert live_objects(sim, "c2", namespace=NS)["web-config"]["data"] == {"version": "1"}


def test_a_rolled_back_revision_this_controller_sent_is_written_back_after_a_newer_commit(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_rolled_back_revision_this_controller_sent_is_written_back_after_a_newer_commit, tmp_path, sim
    )
