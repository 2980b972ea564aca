"""A rollout that rolls back on its own (`onFailure: rollback`) sends the clusters it moved back to what they
held at once, not at their next resync minutes later (docs/rollouts.md).

The real `fleet.controller.engine.Engine` in-process against an in-process `fleet sim`, following a real
git repository; the failure is a 422 answered by the sim to the apply on the second wave's cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from fleet.sim import testing
from tests.support.inprocess import NS, clusters_sim, running, web_objects, web_repo
from tests.support.reconcile import live_objects

__all__ = ["clusters_sim"]  # the fixture `sim`


async def _test_an_automatic_rollback_sends_the_moved_clusters_back_at_once(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, request_timeout=30.0) as run:
        eng = run.engine
        first = next(iter(run.status()["clusters"].values()))["revision"]
        await sim.faults(
            "c2", {"status": 422, "method": "PATCH", "path": f"/namespaces/{NS}/configmaps/web-"}
        )
        rollout = {
            "waves": [{"name": "canary", "placement": {"clusters": ["c1"]}}, {"name": "rest"}],
            "onFailure": "rollback",
        }
        objects = web_objects("2")
        repo.bundle("web", objects, namespace=NS, selector={"web": "yes"}, rollout=rollout)
        repo.commit("web 2")
        eng.trigger_fetch(reason="test")

        def rolled_back(doc: dict[str, Any]) -> bool:
            r = eng.rollout_document("web", revision=None)
            return r is not None and r["state"] == "RolledBack"

        await run.until(rolled_back, "web's rollout rolled back on c2's failure")
        await run.until(
            lambda doc: (
                doc["clusters"]["c1"]["bundles"]["web"]["revision"] == first
                and doc["clusters"]["c1"]["bundles"]["web"]["state"] == "Synced"
            ),
            "c1, moved by the rollout, back at the first revision",
            within=20.0,
        )
        assert live_objects(sim, "c1", namespace=NS)["web-config"]["data"] == {"version": "1"}


def test_an_automatic_rollback_sends_the_moved_clusters_back_at_once(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_an_automatic_rollback_sends_the_moved_clusters_back_at_once, tmp_path, sim)
