"""The engine's Kubernetes Events go out on the connections of each cluster's rounds (docs/reconcile.md,
"Talking to clusters"): the engine hands its Event writer each cluster's round client, in-process over
`fleet sim`."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.sim import testing
from tests.support.inprocess import clusters_sim, running, web_objects, web_repo

__all__ = ["clusters_sim"]  # the fixture `sim`


async def _test_a_commits_events_are_written_by_a_client_that_sends_on_each_clusters_round_client(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo, kube_events=True) as run:
        repo.bundle("web", web_objects("2"), namespace="web", selector={"web": "yes"})
        await run.commit(repo, "web 2")
        events = run.engine.audit.events
        assert events is not None

        async def posted(cluster: str) -> bool:
            return any(
                "/events" in str(e["path"]) and e["method"] == "POST" for e in await sim.journal(cluster)
            )

        with anyio.fail_after(10):  # the Events of the commit's rounds, on the two clusters it changed
            for cluster in ("c1", "c2"):
                while not await posted(cluster):  # noqa: ASYNC110 (polls the sim's journal)
                    await anyio.sleep(0.05)
        assert {c for c, _ in events._clients} >= {"c1", "c2"}
        for (cluster, _), client in events._clients.items():
            assert client.shares is run.engine.clusters[cluster].client, cluster


def test_a_commits_events_are_written_by_a_client_that_sends_on_each_clusters_round_client(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(
        _test_a_commits_events_are_written_by_a_client_that_sends_on_each_clusters_round_client, tmp_path, sim
    )
