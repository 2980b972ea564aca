"""The in-process set-ups of tests/controller: `fleet serve`'s parts over real HTTP against an in-process
`fleet sim`.

Owns two set-ups and what their tests share:
- Replicas sharing a management cluster (fleet.controller.shared, docs/scaling.md): the fixture
  `management_sim` (a sim serving the cluster "mgmt"; the tests' `sim`), `Owner` (a replica's answers
  about its leases, fixed for a test), `replica` (a replica's store, Conductor and `Shared`, built as
  `fleet serve` builds them) and `close`, `management_client`, `two_clusters_on_two_shards`, `until`,
  `last_seq`.
- The real `fleet.controller.engine.Engine` following a real git repository (pygit2): the fixture
  `clusters_sim` (clusters c1, c2, c3; the tests' `sim`), `web_repo` and `web_objects` (bundle web on c1
  and c2, base on every cluster), `engine_running` (the engine started over any sim and repository),
  `running` (over `clusters_sim`: every cluster Synced and watched) and its `Running`, `round_of`,
  `other_replica_writes` (another replica of the same source, played by the test).

A test file takes a fixture in by importing it and naming it in `__all__`. Does not: check anything of what
the tests do with these (the tests assert), or start a process.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import kube, statedb
from fleet.clients import records as records_client
from fleet.cluster import apply
from fleet.cluster import watch as watching
from fleet.controller import audit, engine, rollouts, shared
from fleet.controller.metrics import Metrics
from fleet.core import inventory, model, sharding
from fleet.sim import testing
from tests.support.reconcile import GitOpsRepo, configmap

# -- replicas sharing a management cluster ----------------------------------------------------------------

BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
SHARDS = 4
REV = "c" * 40
SYNCED = {"web": rollouts.Observed(state=model.State.SYNCED)}


@pytest.fixture(name="sim")
def management_sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def two_clusters_on_two_shards() -> tuple[str, str]:
    """A cluster of shard 0 (replica a's) and one of shard 1 (replica b's)."""
    names = [f"c{i}" for i in range(100)]
    first = next(n for n in names if sharding.shard_of(n, shards=SHARDS) == 0)
    second = next(n for n in names if sharding.shard_of(n, shards=SHARDS) == 1)
    return first, second


@dataclass
class Owner:
    """The replica's answers about its leases, fixed for a test."""

    me: str
    mine: frozenset[int]
    coordinator: bool
    shards: int = SHARDS

    def shard_of(self, cluster: str) -> int:
        return sharding.shard_of(cluster, shards=self.shards)

    def writable(self) -> frozenset[int]:
        return self.mine

    def coordinating(self) -> bool:
        return self.coordinator

    def epoch(self, shard: int) -> int | None:
        return 1 if shard in self.mine else None


@dataclass
class Replica:
    store: shared.ManagedStore
    conductor: rollouts.Conductor
    shared: shared.Shared
    woken: list[str] = field(default_factory=list)


def management_client(sim: testing.SimHandle) -> kube.Client:
    """A client of the management cluster "mgmt" (settings `BASE`)."""
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    return kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=BASE)


async def replica(
    sim: testing.SimHandle,
    tmp: Path,
    owner: Owner,
    *,
    records_type: type[records_client.Records] = records_client.Records,
    period: float = 0.1,
) -> Replica:
    """A replica `owner.me` (its database under `tmp`), its tasks not started; `close` it."""
    records = records_type(management_client(sim), instance="fleet", writer=owner.me)
    store = shared.ManagedStore(tmp / owner.me / "state.db", records=records)
    await store.start()
    metrics = Metrics()
    woken: list[str] = []

    async def save(write: Any) -> None:
        await anyio.to_thread.run_sync(write)

    recorder = audit.Recorder(store=store, metrics=metrics)
    conductor = rollouts.Conductor(
        store=store, metrics=metrics, wake=lambda c, _ctx: woken.append(c), save=save, observer=recorder
    )
    conductor.restore()
    sh = shared.Shared(store, owner=owner, period=period)
    sh.attach(conductor, documents=lambda wanted: {})
    return Replica(store=store, conductor=conductor, shared=sh, woken=woken)


async def close(*replicas: Replica) -> None:
    """Close each replica's client of the management cluster and its database."""
    for r in replicas:
        await r.store.records.client.aclose()
        r.store.close()


async def until(check: Callable[[], bool], *, within: float, what: str) -> float:
    """Seconds until `check()` holds (polled: the replica's tasks run on their own)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s: {what}")
        await anyio.sleep(0.02)
    return time.monotonic() - started


def last_seq(sim: testing.SimHandle) -> int:
    """The management cluster's last journal entry (0: none yet)."""
    entries = sim.journal_sync("mgmt")
    return entries[-1]["seq"] if entries else 0


# -- the engine following a git repository ----------------------------------------------------------------

NAMES = ["c1", "c2", "c3"]
NS = "web"
WATCH = watching.Settings(timeout_seconds=120, backoff_base=0.05, backoff_cap=0.5, health_interval=0.05)
RECORD_WRITE = "PATCH /api/v1/namespaces/fleet-system/configmaps/fleet-revision-"


@pytest.fixture(name="sim")
def clusters_sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=NAMES) as handle:
        yield handle


def web_objects(version: str = "1", *, extra: bool = True) -> list[dict[str, Any]]:
    """Bundle web's objects: web-config at `version`, web-static, and web-extra unless not `extra`."""
    objects = [configmap("web-config", namespace=NS, version=version), configmap("web-static", namespace=NS)]
    if extra:
        objects.append(configmap("web-extra", namespace=NS))
    return objects


def web_repo(root: Path, *, web: str = "1", extra: bool = True) -> GitOpsRepo:
    """The clusters of `NAMES` (c1 and c2 labelled for web), bundle web (`web_objects`) and bundle base on
    every cluster, committed."""
    repo = GitOpsRepo(root)
    for name in NAMES:
        repo.cluster(name, labels={"web": "yes" if name != "c3" else "no"})
    repo.bundle("web", web_objects(web, extra=extra), namespace=NS, selector={"web": "yes"})
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

    async def quiet(self) -> None:
        """No round running or waiting for its turn: every round so far has ended and is counted.

        A cluster shows Synced as soon as its round's result is recorded; the round goes on after that
        (the rollouts told, which may start the next cluster's turn and write their records; then
        `fleet_reconciles_total` counted and the state saved). A count read at the first Synced may
        leave out a round still ending (CI, loaded machine: c3's start-up round counted after the test's
        first reading, as if a commit that changed nothing there had cost it a round)."""

        def quiet(_: dict[str, Any]) -> bool:
            return all(
                rt.pending is None and not rt.in_round and not rt.look_again
                for rt in self.engine.clusters.values()
            )

        await self.until(quiet, "no round running or waiting for its turn")

    async def marks(self) -> dict[str, int]:
        out = {}
        for name in NAMES:
            journal = await self.sim.journal(name)
            out[name] = journal[-1]["seq"] if journal else 0
        return out

    async def since(self, marks: Mapping[str, int]) -> dict[str, list[str]]:
        """Each cluster's requests after `marks`, watch streams and Events left out (a revision record's
        write as `RECORD_WRITE`)."""
        return {name: _requests(await self.sim.journal(name, since=marks[name])) for name in NAMES}

    async def commit(self, repo: GitOpsRepo, message: str) -> str:
        sha = repo.commit(message)
        self.engine.trigger_fetch(reason="test")
        await self.synced_at(sha)
        await anyio.sleep(0.3)  # anything the commit still sends arrives in the journal
        return sha


@asynccontextmanager
async def engine_running(
    tmp_path: Path,
    sim: testing.SimHandle,
    repo: GitOpsRepo,
    *,
    kube_settings: kube.Settings | None = None,
    **overrides: Any,
) -> AsyncIterator[engine.Engine]:
    """The engine running over `repo` and `sim`'s clusters (its state under `tmp_path`; its repository
    fetched only when a test asks, `trigger_fetch`; no Kubernetes Events), `overrides` of its settings;
    stopped at the end."""
    kubeconfig = await kube.load_kubeconfig(str(sim.kubeconfig), allow_exec_auth=False)
    store = statedb.StateStore(tmp_path / "state" / "state.db")
    fields: dict[str, Any] = {
        "repo": str(repo.root),
        "state_dir": tmp_path / "state",
        "interval": 3600.0,
        "fetch_min_gap": 0.0,
        "kube_events": False,
        **overrides,
    }
    eng = engine.Engine(
        engine.Settings(**fields),
        kubeconfig=kubeconfig,
        kube_settings=kube_settings or kube.Settings(),
        store=store,
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(eng.run)
            yield eng
            await eng.stop(grace=1.0)
            tg.cancel_scope.cancel()
    finally:
        store.close()


@asynccontextmanager
async def running(
    tmp_path: Path,
    sim: testing.SimHandle,
    repo: GitOpsRepo,
    *,
    request_timeout: float = 5.0,
    settled: bool = True,
    **overrides: Any,
) -> AsyncIterator[Running]:
    """`engine_running` over the clusters of `NAMES`, its watches' settings `WATCH`; once every cluster is
    Synced at the repository's head, watched and no round running or waiting, unless not `settled`."""
    kube_settings = kube.Settings(request_timeout=request_timeout, retry_budget=5.0, backoff_base=0.05)
    overrides.setdefault("watch_settings", WATCH)
    async with engine_running(tmp_path, sim, repo, kube_settings=kube_settings, **overrides) as eng:
        handle = Running(eng, sim)
        if settled:
            await handle.synced_at(str(repo.repo.head.target))
            await handle.watching()
            await handle.quiet()
        yield handle


async def round_of(eng: engine.Engine, cluster: str, revision: str) -> None:
    """Until `cluster`'s round at `revision` has run and no other is under way or pending."""
    rt = eng.clusters[cluster]
    deadline = time.monotonic() + 30
    while rt.claim is None or rt.claim.revision != revision or rt.in_round or rt.pending is not None:
        assert time.monotonic() < deadline, f"{cluster}'s round at {revision[:7]} never ran"
        await anyio.sleep(0.05)


async def other_replica_writes(
    sim: testing.SimHandle, cluster: str, claim: inventory.Claim, obj: Mapping[str, Any] | None = None
) -> None:
    """What a replica that fetched `claim`'s revision first writes: its revision record, then the change
    (`obj`, as fleet applies it; none when not given)."""
    kc = await kube.load_kubeconfig(str(sim.kubeconfig), allow_exec_auth=False)
    client = kube.Client(
        cluster=cluster, context=kc.context(cluster), settings=kube.Settings(retry_budget=3.0)
    )
    try:
        _, rv = await apply.read_record(client, instance="fleet", source=claim.source)
        await apply.write_record(client, claim, instance="fleet", resource_version=rv)
        if obj is not None:
            await client.apply(apply.CONFIGMAP, obj, force=True)
    finally:
        await client.aclose()
