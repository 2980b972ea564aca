"""How many requests a commit costs the controller per cluster, counted in `fleet sim`'s request journal.

The real `fleet.controller.engine.Engine` runs in-process against an in-process sim over HTTP, following
a real git repository (pygit2). Once its watch streams hold what it owns, a commit that changes one bundle
costs each cluster that bundle is placed on exactly one request (the server-side apply of the changed
object) and every other cluster none; the periodic resync still reads the server; a gap in a watch
(its stream dropped, a 410) sends the next round to the server; a round that would prune reads the server
before deleting (docs/reconcile.md, "Reading from the watch caches").
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from fleet.sim import testing
from tests.support.inprocess import NS, clusters_sim, running, web_objects, web_repo

__all__ = ["clusters_sim"]  # the fixture `sim`

WEB_CONFIG_WRITE = "PATCH /api/v1/namespaces/web/configmaps/web-config"


async def _test_a_commit_costs_one_write_per_changed_cluster_and_nothing_on_the_others(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        for version in ("2", "3"):
            marks = await run.marks()
            repo.bundle(
                "web",
                web_objects(version),
                namespace=NS,
                selector={"web": "yes"},
            )
            await run.commit(repo, f"web {version}")
            sent = await run.since(marks)
            for name in ("c1", "c2"):  # the changed object, carrying the claim: no read, no record
                assert sent[name] == [WEB_CONFIG_WRITE], "\n".join(sent[name])
            assert sent["c3"] == [], sent


async def _test_the_resync_reads_the_server_and_writes_nothing(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        marks = await run.marks()
        rt = run.engine.clusters["c1"]
        run.engine._wake(rt, reason="resync")
        deadline = time.monotonic() + 30
        sent: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            sent = await run.since(marks)
            if any(r.startswith("GET") for r in sent["c1"]):
                break
            await anyio.sleep(0.1)
        await anyio.sleep(0.5)
        sent = await run.since(marks)
        reads = [r for r in sent["c1"] if r.startswith("GET")]
        assert "GET /api/v1/namespaces" in reads, sent
        assert any(r.startswith("GET /api/v1/namespaces/fleet-system/configmaps") for r in reads), sent
        assert not [r for r in sent["c1"] if not r.startswith("GET")], sent  # no write at all


async def _test_a_watch_gap_sends_the_next_round_to_the_server(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        # Every stream of c1 dropped and refused for a moment: its cache has a gap.
        await sim.faults("c1", {"watch": True, "status": 503, "count": 1000})
        await sim.faults("c1", {"dropWatches": True, "count": 1})
        rt = run.engine.clusters["c1"]
        assert rt.watcher is not None and rt.watcher.cache is not None
        cache = rt.watcher.cache
        await run.until(lambda doc: not cache.fresh("", "ConfigMap", "v1"), "a gap in c1's ConfigMap stream")
        marks = await run.marks()
        repo.bundle(
            "web",
            web_objects("gap"),
            namespace=NS,
            selector={"web": "yes"},
        )
        await run.commit(repo, "during a gap")
        sent = await run.since(marks)
        assert "GET /api/v1/namespaces" in sent["c1"], sent  # read from the server
        assert [r for r in sent["c1"] if not r.startswith("GET")] == [WEB_CONFIG_WRITE], sent
        assert sent["c2"] == [WEB_CONFIG_WRITE], sent
        await sim.clear_faults("c1")


async def _test_a_round_that_would_prune_reads_the_server_before_deleting(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = web_repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        marks = await run.marks()
        repo.bundle(
            "web",
            web_objects("1", extra=False),
            namespace=NS,
            selector={"web": "yes"},
        )
        await run.commit(repo, "drop web-extra")
        sent = await run.since(marks)
        for name in ("c1", "c2"):
            deleted = sent[name].index("DELETE /api/v1/namespaces/web/configmaps/web-extra")
            assert "GET /api/v1/namespaces" in sent[name][:deleted], sent  # the server read before deleting
        assert sent["c3"] == [], sent


def test_a_commit_costs_one_write_per_changed_cluster_and_nothing_on_the_others(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_a_commit_costs_one_write_per_changed_cluster_and_nothing_on_the_others, tmp_path, sim)


def test_the_resync_reads_the_server_and_writes_nothing(tmp_path: Path, sim: testing.SimHandle) -> None:
    anyio.run(_test_the_resync_reads_the_server_and_writes_nothing, tmp_path, sim)


def test_a_watch_gap_sends_the_next_round_to_the_server(tmp_path: Path, sim: testing.SimHandle) -> None:
    anyio.run(_test_a_watch_gap_sends_the_next_round_to_the_server, tmp_path, sim)


def test_a_round_that_would_prune_reads_the_server_before_deleting(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    anyio.run(_test_a_round_that_would_prune_reads_the_server_before_deleting, tmp_path, sim)
