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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube, statedb
from fleet.cluster import watch as watching
from fleet.controller import engine
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap

NAMES = ["c1", "c2", "c3"]
RECORD_WRITE = "PATCH /api/v1/namespaces/fleet-system/configmaps/fleet-revision-"
WEB_CONFIG_WRITE = "PATCH /api/v1/namespaces/web/configmaps/web-config"
NS = "web"
WATCH = watching.Settings(timeout_seconds=120, backoff_base=0.05, backoff_cap=0.5, health_interval=0.05)


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=NAMES) as handle:
        yield handle


def _repo(root: Path, *, web: str = "1", extra: bool = True) -> GitOpsRepo:
    repo = GitOpsRepo(root)
    for name in NAMES:
        repo.cluster(name, labels={"web": "yes" if name != "c3" else "no"})
    objects = [configmap("web-config", namespace=NS, version=web), configmap("web-static", namespace=NS)]
    if extra:
        objects.append(configmap("web-extra", namespace=NS))
    repo.bundle("web", objects, namespace=NS, selector={"web": "yes"})
    repo.bundle("base", [configmap("base-config", namespace="base")], namespace="base", clusters=NAMES)
    repo.commit("start")
    return repo


def _requests(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The requests a round sent: watch streams (long-lived, opened before) and Events left out."""
    out = []
    for e in entries:
        query = str(e.get("query") or "")
        if "watch=true" in query or "/events" in str(e["path"]):
            continue
        line = f"{e['method']} {e['path']}"
        out.append(RECORD_WRITE if line.startswith(RECORD_WRITE) else line)
    return out


class Running:
    def __init__(self, eng: engine.Engine, sim: testing.SimHandle) -> None:
        self.engine = eng
        self.sim = sim

    def status(self) -> dict[str, Any]:
        return self.engine.status_document()

    async def until(self, check: Callable[[dict[str, Any]], bool], what: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if check(self.status()):
                return
            await anyio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.status()['clusters']}")

    async def synced_at(self, sha: str) -> None:
        def done(doc: dict[str, Any]) -> bool:
            clusters = doc["clusters"]
            return set(clusters) == set(NAMES) and all(
                c["state"] == "Synced" and c.get("revision") == sha for c in clusters.values()
            )

        await self.until(done, f"every cluster Synced at {sha[:7]}")

    async def watching(self) -> None:
        """Every cluster's streams open: its kinds, ConfigMaps and Namespaces (the cache's own)."""
        await self.until(
            lambda doc: (
                set(doc["clusters"]) == set(NAMES)
                and all((c.get("watch") or {}).get("streams", 0) >= 1 for c in doc["clusters"].values())
            ),
            "watch streams",
        )

        def fresh(doc: dict[str, Any]) -> bool:
            for rt in self.engine.clusters.values():
                cache = rt.watcher.cache if rt.watcher is not None else None
                if cache is not None and not all(
                    cache.fresh("", k, "v1") for k in ("ConfigMap", "Namespace")
                ):
                    return False
            return True

        await self.until(fresh, "watch caches listed and their streams open")

    async def marks(self) -> dict[str, int]:
        out = {}
        for name in NAMES:
            journal = await self.sim.journal(name)
            out[name] = journal[-1]["seq"] if journal else 0
        return out

    async def since(self, marks: Mapping[str, int]) -> dict[str, list[str]]:
        return {name: _requests(await self.sim.journal(name, since=marks[name])) for name in NAMES}

    async def commit(self, repo: GitOpsRepo, message: str) -> str:
        sha = repo.commit(message)
        self.engine.trigger_fetch(reason="test")
        await self.synced_at(sha)
        await anyio.sleep(0.3)  # anything the commit still sends arrives in the journal
        return sha


@asynccontextmanager
async def running(
    tmp_path: Path,
    sim: testing.SimHandle,
    repo: GitOpsRepo,
    *,
    request_timeout: float = 5.0,
    **overrides: Any,
) -> AsyncIterator[Running]:
    kubeconfig = await kube.load_kubeconfig(str(sim.kubeconfig), allow_exec_auth=False)
    store = statedb.StateStore(tmp_path / "state" / "state.db")
    fields: dict[str, Any] = {
        "repo": str(repo.root),
        "state_dir": tmp_path / "state",
        "interval": 3600.0,
        "fetch_min_gap": 0.0,
        "kube_events": False,
        "watch_settings": WATCH,
        **overrides,
    }
    eng = engine.Engine(
        engine.Settings(**fields),
        kubeconfig=kubeconfig,
        kube_settings=kube.Settings(request_timeout=request_timeout, retry_budget=5.0, backoff_base=0.05),
        store=store,
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(eng.run)
            handle = Running(eng, sim)
            await handle.synced_at(str(repo.repo.head.target))
            await handle.watching()
            yield handle
            await eng.stop(grace=1.0)
            tg.cancel_scope.cancel()
    finally:
        store.close()


async def _test_a_commit_costs_one_write_per_changed_cluster_and_nothing_on_the_others(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = _repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        for version in ("2", "3"):
            marks = await run.marks()
            repo.bundle(
                "web",
                [
                    configmap("web-config", namespace=NS, version=version),
                    configmap("web-static", namespace=NS),
                    configmap("web-extra", namespace=NS),
                ],
                namespace=NS,
                selector={"web": "yes"},
            )
            await run.commit(repo, f"web {version}")
            sent = await run.since(marks)
            for name in ("c1", "c2"):  # the revision record's claim, then the changed object: no read
                assert sent[name] == [RECORD_WRITE, WEB_CONFIG_WRITE], "\n".join(sent[name])
            assert sent["c3"] == [], sent


async def _test_the_resync_reads_the_server_and_writes_nothing(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = _repo(tmp_path / "repo")
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
    repo = _repo(tmp_path / "repo")
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
            [
                configmap("web-config", namespace=NS, version="gap"),
                configmap("web-static", namespace=NS),
                configmap("web-extra", namespace=NS),
            ],
            namespace=NS,
            selector={"web": "yes"},
        )
        await run.commit(repo, "during a gap")
        sent = await run.since(marks)
        assert "GET /api/v1/namespaces" in sent["c1"], sent  # read from the server
        assert [r for r in sent["c1"] if not r.startswith("GET")] == [RECORD_WRITE, WEB_CONFIG_WRITE], sent
        assert sent["c2"] == [RECORD_WRITE, WEB_CONFIG_WRITE], sent
        await sim.clear_faults("c1")


async def _test_a_round_that_would_prune_reads_the_server_before_deleting(
    tmp_path: Path, sim: testing.SimHandle
) -> None:
    repo = _repo(tmp_path / "repo")
    async with running(tmp_path, sim, repo) as run:
        marks = await run.marks()
        repo.bundle(
            "web",
            [configmap("web-config", namespace=NS, version="1"), configmap("web-static", namespace=NS)],
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
