"""The HTTP API of two replicas sharing a fleet (docs/scaling.md, "State of record"), in-process over real
HTTP: each replica is a real `Engine` (not started: its clusters restored from its state database) with
its real lease loop and `Shared` on `fleet sim` as the management cluster, behind the real server. Asked of
the replica that does not own a cluster, `GET /api/v1/revisions/SHA` answers for the whole fleet (or names
the clusters whose status is unknown), `POST /api/v1/reconcile` is handed to the owner, and a webhook makes
every replica fetch."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from typer.testing import CliRunner

from fleet import cli
from fleet.clients import kube, management, statedb
from fleet.clients import records as records_client
from fleet.controller import engine, replicas, runtime, server, shared, webhook
from fleet.core import coordination, leases, model, sharding
from fleet.sim import testing

pytestmark = pytest.mark.slow  # lease timings of seconds

T = leases.Timings(duration=4, renew_deadline=2, retry=0.5)
SHARDS = 4
BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
REV = "d" * 40
OLD = "e" * 40
SINCE = "2026-12-07T09:00:00Z"
SECRET = b"push-secret"
CLUSTERS = sorted(
    {sharding.shard_of(f"c{i}", shards=SHARDS): f"c{i}" for i in range(100)}.values()
)  # one per shard


@dataclass
class Served:
    engine: engine.Engine
    replica: replicas.Replica
    shared: shared.Shared
    http: httpx.AsyncClient

    @property
    def me(self) -> str:
        return self.replica.config.me

    def mine(self) -> list[str]:
        return [c for c in CLUSTERS if self.engine.ownership.owns(c)]


def restore_clusters(path: Path) -> None:
    """The replica's state database as a previous run left it: every cluster holds bundle web at OLD."""
    path.parent.mkdir(parents=True)
    db = statedb.StateStore(path)
    try:
        for c in CLUSTERS:
            db.record_cluster(
                statedb.ClusterRow(name=c, state="Synced", revision=OLD),
                (statedb.TargetRow(cluster=c, bundle="web", state="Synced", revision=OLD, since=SINCE),),
            )
    finally:
        db.close()


@asynccontextmanager
async def replica(sim: testing.SimHandle, tmp: Path, me: str) -> AsyncIterator[Served]:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    settings = management.settings_for(BASE, timings=T, replica=me)
    leases_client = management.Leases(
        kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=settings), instance="fleet"
    )
    rep = replicas.Replica(
        leases_client, coordination.Config(instance="fleet", me=me, shards=SHARDS, timings=T)
    )
    records = records_client.Records(
        kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=settings),
        instance="fleet",
        writer=me,
    )
    restore_clusters(tmp / me / "state.db")
    store = await shared.open_store(tmp / me / "state.db", records=records)
    eng = engine.Engine(
        engine.Settings(repo=str(tmp / "no-repo"), state_dir=tmp / me),
        kubeconfig=kube.Kubeconfig(contexts={}),
        kube_settings=BASE,
        store=store,
        replica=rep,
    )
    sh = shared.Shared(store, owner=shared.ReplicaOwner(rep), period=T.retry)
    eng.share(sh)
    settings_ = server.ServerSettings(webhook_secret=SECRET)
    app = server.build_app(eng, settings_)
    try:
        async with (
            server.Listener(app, limits=settings_.limits, metrics=eng.metrics) as listener,
            anyio.create_task_group() as tg,
        ):
            host, port = await listener.bind("127.0.0.1", 0)
            tg.start_soon(listener.serve)
            tg.start_soon(rep.run)
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
                yield Served(engine=eng, replica=rep, shared=sh, http=http)
            tg.cancel_scope.cancel()
    finally:
        await leases_client.client.aclose()
        await records.client.aclose()
        store.close()


async def until(check: Callable[[], Awaitable[bool] | bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    # Polls the replicas: their lease loops run on their own period, no event tells of a settled state.
    while time.monotonic() < deadline:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


def run(sim: testing.SimHandle, tmp: Path, body: Callable[[Served, Served], Awaitable[None]]) -> None:
    async def main() -> None:
        async with replica(sim, tmp, "a-1") as a, replica(sim, tmp, "b-2") as b:
            await until(
                lambda: bool(a.mine()) and bool(b.mine()) and len(a.mine()) + len(b.mine()) == len(CLUSTERS),
                within=15,
                what="two replicas share every shard",
            )
            for r in (a, b):  # each replica's rounds took its own clusters to REV (the engine is not started)
                for c in r.mine():
                    st = r.engine.clusters[c].bundles["web"]
                    st.revision, st.since = REV, SINCE
            for r in (a, b, a):  # every summary written, then read by both
                await r.shared.step()
            await b.shared.step()
            await body(a, b)

    anyio.run(main)


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def test_a_revision_asked_of_a_replica_lists_the_holders_of_every_shard_and_names_the_unknown(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def body(a: Served, b: Served) -> None:
        for r in (a, b):
            got = await r.http.get(f"/api/v1/revisions/{REV[:12]}")
            assert got.status_code == 200, got.text
            doc = got.json()
            assert sorted(doc["holders"]) == CLUSTERS  # its own clusters and the other replica's
            assert all(doc["holders"][c] == {"web": {"state": "Synced", "since": SINCE}} for c in CLUSTERS)
            assert doc["unknown"] == {} and doc["shards"]["missing"] == []
        # A shard of b's loses its summary: a tells its clusters are unknown, naming the shard.
        theirs = b.mine()[0]
        shard = sharding.shard_of(theirs, shards=SHARDS)
        name = f"fleet-status-{shard}"
        deleted = await a.shared.records.client.request(
            "DELETE", f"/api/v1/namespaces/fleet-system/configmaps/{name}", what="test"
        )
        assert deleted[0] == 200
        await a.shared.step()
        doc = (await a.http.get(f"/api/v1/revisions/{REV}")).json()
        assert theirs not in doc["holders"]
        assert f"shard {shard} has no status summary" in doc["unknown"][theirs]
        assert doc["shards"]["missing"] == [shard]
        # fleet status --revision names them and does not end as a success.
        url = str(a.http.base_url).rstrip("/")
        shown = await anyio.to_thread.run_sync(
            lambda: CliRunner().invoke(cli.app, ["status", "--server", url, "--revision", REV[:12]])
        )
        assert shown.exit_code == 1, shown.output
        assert "status unknown" in shown.output and theirs in shown.output
        # The summaries cannot be read: the answer says so (what it shows may be old), never a plain success.
        await sim.faults("mgmt", {"path": "configmaps", "status": 503, "count": 1000})
        await a.shared.step()
        await sim.clear_faults("mgmt")
        doc = (await a.http.get(f"/api/v1/revisions/{REV}")).json()
        assert any("management cluster" in e["message"] for e in doc["errors"]), doc

    run(sim, tmp_path, body)


def test_a_reconcile_asked_of_a_replica_that_does_not_own_the_cluster_is_run_by_its_owner(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def body(a: Served, b: Served) -> None:
        theirs = b.mine()[0]
        b.engine.clusters[theirs].pending = None
        got = await a.http.post("/api/v1/reconcile", params={"cluster": theirs})
        assert got.status_code == 202, got.text
        shard = sharding.shard_of(theirs, shards=SHARDS)
        assert got.json() == {"queued": [], "handedOn": {theirs: {"shard": shard, "owner": b.me}}}
        assert a.engine.clusters[theirs].pending is None  # a runs nothing on b's cluster
        await b.shared.step()  # b's next period takes the request in
        pending = b.engine.clusters[theirs].pending
        assert pending is not None and "requested" in pending.reasons
        assert await b.shared.records.requests() == []  # taken: its record is gone
        # The whole fleet asked of one replica: its own clusters queued, the rest handed on.
        got = (await b.http.post("/api/v1/reconcile")).json()
        assert sorted(got["queued"]) == b.mine()
        assert sorted(got["handedOn"]) == a.mine()
        # A bundle asked of a replica that never reconciled the other's clusters (it knows none of their
        # bundles): still handed on, the owner decides.
        for c in a.mine():
            b.engine.clusters[c].bundles.clear()
        got = (await b.http.post("/api/v1/reconcile", params={"bundle": "web"})).json()
        assert sorted(got["queued"]) == b.mine()
        assert sorted(got["handedOn"]) == a.mine()
        # Asked twice before a took them: one request per shard, the clusters merged, never piling up.
        waiting = await b.shared.records.requests()
        assert sorted(r.shard for r in waiting) == sorted(
            sharding.shard_of(c, shards=SHARDS) for c in a.mine()
        )
        for c in a.mine():
            a.engine.clusters[c].pending = None
        await a.shared.step()
        assert all(
            "requested" in (a.engine.clusters[c].pending or runtime.Request()).reasons for c in a.mine()
        )
        assert await a.shared.records.requests() == []

    run(sim, tmp_path, body)


def test_a_webhook_to_one_replica_makes_every_replica_fetch(sim: testing.SimHandle, tmp_path: Path) -> None:
    async def body(a: Served, b: Served) -> None:
        assert not b.engine._fetch_wake.is_set()
        signature = webhook.sign_github(body=b"{}", secret=SECRET)
        got = await a.http.post("/api/v1/webhook", content=b"{}", headers={"X-Hub-Signature-256": signature})
        assert got.status_code == 202, got.text
        assert a.engine._fetch_wake.is_set()
        await b.shared.step()  # b's next period reads the announcement
        assert b.engine._fetch_wake.is_set()
        assert got.json() == {"fetch": "started", "replicas": "told to fetch through the management cluster"}
        a.engine._fetch_wake = anyio.Event()
        await a.shared.step()  # a announced it itself: it does not fetch again
        assert not a.engine._fetch_wake.is_set()

    run(sim, tmp_path, body)


def test_the_metrics_of_either_replica_say_who_holds_every_shard_and_drop_the_clusters_it_let_go(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def body(a: Served, b: Served) -> None:
        expected = [
            f'fleet_shard_holder{{replica="{a.me if c in a.mine() else b.me}",shard="{sharding.shard_of(c, shards=SHARDS)}"}} 1.0'
            for c in CLUSTERS
        ]

        async def told(r: Served) -> bool:  # by its lease reads, within a retry period
            text = (await r.http.get("/metrics")).text
            return all(line in text for line in expected) and "fleet_shards_unheld 0.0" in text

        for r in (a, b):
            await until(
                functools.partial(told, r), within=5, what=f"{r.me}'s metrics name every shard's holder"
            )
        mine = a.mine()[0]
        a.engine.metrics.set_cluster_state(mine, model.State.SYNCED)  # as a round of a's set it
        assert (
            f'fleet_cluster_state{{cluster="{mine}",state="Synced"}} 1.0'
            in (await a.http.get("/metrics")).text
        )
        a.replica.stop()  # a hands its shards over: b reports its clusters from now on
        await until(lambda: not a.mine(), within=10, what="a lets its shards go")
        assert f'cluster="{mine}"' not in (await a.http.get("/metrics")).text

    run(sim, tmp_path, body)


def test_a_replica_builds_the_documents_of_its_own_clusters_only_for_its_summaries_and_its_status(
    sim: testing.SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other replica's clusters come from their summaries: a period and a status GET build a document
    for each of this replica's clusters once (before, every cluster's once per period and twice per GET:
    most of the status API's and the summaries' CPU at 1,000 clusters, docs/benchmarks.md)."""
    built: list[str] = []
    document = runtime.ClusterRuntime.document

    def counted(rt: runtime.ClusterRuntime) -> dict[str, object]:
        built.append(rt.name)
        return document(rt)

    monkeypatch.setattr(runtime.ClusterRuntime, "document", counted)

    async def body(a: Served, b: Served) -> None:
        mine = a.mine()
        assert 0 < len(mine) < len(CLUSTERS)
        built.clear()
        await a.shared.step()
        assert sorted(built) == mine
        built.clear()
        got = await a.http.get("/api/v1/status")
        assert got.status_code == 200, got.text
        assert sorted(built) == mine
        clusters = got.json()["clusters"]
        assert sorted(clusters) == CLUSTERS  # still the whole fleet, the others from their summaries
        assert all(clusters[c]["bundles"]["web"]["revision"] == REV for c in CLUSTERS)
        assert all("since" not in clusters[c]["bundles"]["web"] for c in CLUSTERS)

    run(sim, tmp_path, body)


def test_the_status_shows_the_other_replicas_clusters_as_their_summary_has_them_now(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    """What a status GET shows of a summary's clusters is kept while the summary is unchanged, and follows
    it when its owner writes it again."""

    async def body(a: Served, b: Served) -> None:
        theirs = b.mine()[0]
        shown = (await a.http.get("/api/v1/status")).json()["clusters"][theirs]
        assert shown["bundles"]["web"]["revision"] == REV
        assert (await a.http.get("/api/v1/status")).json()["clusters"][theirs] == shown
        b.engine.clusters[theirs].bundles["web"].revision = OLD
        await b.shared.step()  # b writes the shard's summary again
        await a.shared.step()  # a reads it
        again = (await a.http.get("/api/v1/status")).json()["clusters"][theirs]
        assert again["bundles"]["web"]["revision"] == OLD
        assert "since" not in again["bundles"]["web"]
        assert {k: v for k, v in again.items() if k != "bundles"} == {
            k: v for k, v in shown.items() if k != "bundles"
        }

    run(sim, tmp_path, body)
