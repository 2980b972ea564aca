"""The state of record's client (fleet.clients.records) over real HTTP against `fleet sim` as the management
cluster: installing and migrating, compare-and-swap between replicas, history from every replica, fenced
status summaries, unreadable records as errors naming them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from fleet.clients import kube
from fleet.clients import records as records_client
from fleet.core import history as hist
from fleet.core import model, summaries
from fleet.core import records as rec
from fleet.core import rollout as ro
from fleet.sim import testing

BASE = kube.Settings(request_timeout=2.0, connect_timeout=1.0, retry_budget=3.0, backoff_base=0.05)
SHA = "b" * 40


@pytest.fixture
def sim() -> Iterator[testing.SimHandle]:
    with testing.serving(names=["mgmt"]) as handle:
        yield handle


def store(sim: testing.SimHandle, writer: str, *, instance: str = "fleet") -> records_client.Records:
    kc = kube.parse_kubeconfig([(str(sim.kubeconfig), sim.kubeconfig.read_bytes())])
    client = kube.Client(cluster="mgmt", context=kc.context("mgmt"), settings=BASE)
    return records_client.Records(client, instance=instance, writer=writer)


def run(
    sim: testing.SimHandle, *writers: str, body: Callable[..., Awaitable[Any]], install: bool = True
) -> Any:
    async def main() -> Any:
        stores = [store(sim, w) for w in writers]
        try:
            if install:
                await stores[0].install()
            return await body(*stores)
        finally:
            for s in stores:
                await s.client.aclose()

    return anyio.run(main)


def a_rollout(bundle: str = "web", *, revision: str = SHA, started: float = 100.0) -> rec.Rollout:
    spec = model.RolloutSpec(waves=(model.WaveSpec(name="all"),), progress_deadline=600.0)
    r = ro.start(bundle=bundle, revision=revision, spec=spec, waves=[("all", ("c1",))],
                 from_revisions={"c1": None}, unchanged=(), now=started)  # fmt: skip
    return rec.Rollout(bundle=bundle, revision=revision, started_at=started, updated_at=started,
                       terminal=False, doc={"rollout": ro.dump(r)})  # fmt: skip


def entry(at: float, cluster: str) -> hist.Entry:
    return hist.Entry(at=at, cluster=cluster, bundle="web", outcome="Synced", to_revision=SHA)


async def raw(
    s: records_client.Records, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
) -> tuple[int, Any]:
    return await s.client.request(method, path, what="test", body=body, params=params, accept=(404, 409))


CM = "/api/v1/namespaces/fleet-system/configmaps"


def test_install_creates_the_namespace_and_the_marker_and_a_second_install_changes_nothing(
    sim: testing.SimHandle,
) -> None:
    async def body(a: records_client.Records) -> None:
        first = await a.install()
        assert first == records_client.Installed(schema_found=None)
        status, marker = await raw(a, "GET", f"{CM}/fleet-records")
        assert status == 200
        assert marker["metadata"]["annotations"] == {"fleet.dev/schema": str(rec.SCHEMA)}
        assert marker["data"]["schema"] == str(rec.SCHEMA)
        again = await a.install()
        assert again == records_client.Installed(schema_found=rec.SCHEMA)
        _, same = await raw(a, "GET", f"{CM}/fleet-records")
        assert same["metadata"]["resourceVersion"] == marker["metadata"]["resourceVersion"]

    run(sim, "a", body=body, install=False)


def test_a_marker_of_a_newer_schema_stops_an_older_fleet_naming_it(sim: testing.SimHandle) -> None:
    async def body(a: records_client.Records) -> None:
        await a.install()
        _, marker = await raw(a, "GET", f"{CM}/fleet-records")
        marker["metadata"]["annotations"]["fleet.dev/schema"] = str(rec.SCHEMA + 1)
        await raw(a, "PUT", f"{CM}/fleet-records", marker)
        with pytest.raises(
            rec.RecordError, match=r"ConfigMap/fleet-system/fleet-records: written by a newer"
        ):
            await a.install()

    run(sim, "a", body=body, install=False)


def test_records_of_an_older_schema_are_rewritten_at_the_current_one_on_install(
    sim: testing.SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(a: records_client.Records) -> None:
        await a.install()
        await a.write_rollout(a_rollout())
        await a.append([entry(1.0, "c1")])
        # This fleet is now at schema SCHEMA + 1; its rollout records gained a field.
        monkeypatch.setattr(rec, "SCHEMA", rec.SCHEMA + 1)
        monkeypatch.setitem(rec.MIGRATIONS, (rec.ROLLOUT, rec.SCHEMA - 1), lambda d: {**d, "new": "yes"})
        monkeypatch.setitem(rec.MIGRATIONS, (rec.HISTORY, rec.SCHEMA - 1), dict)
        done = await a.install()
        assert done.schema_found == rec.SCHEMA - 1
        assert sorted(done.migrated) == ["fleet-history-a-000000", f"fleet-rollout-web-{SHA[:12]}"]
        _, stored = await raw(a, "GET", f"{CM}/fleet-rollout-web-{SHA[:12]}")
        assert stored["metadata"]["annotations"]["fleet.dev/schema"] == str(rec.SCHEMA)
        _, marker = await raw(a, "GET", f"{CM}/fleet-records")
        assert marker["metadata"]["annotations"]["fleet.dev/schema"] == str(rec.SCHEMA)
        assert [r.revision for r in await a.rollouts()] == [SHA]

    run(sim, "a", body=body, install=False)


def test_a_rollout_written_over_a_version_another_replica_replaced_is_a_conflict_and_changes_nothing(
    sim: testing.SimHandle,
) -> None:
    async def body(a: records_client.Records, b: records_client.Records) -> None:
        mine = await a.write_rollout(a_rollout())
        assert mine.meta.version
        seen_by_b = (await b.rollouts())[0]
        newer = await a.write_rollout(rec.Rollout(**{**mine.__dict__, "updated_at": 200.0}))
        with pytest.raises(records_client.Conflict, match=r"fleet-rollout-web-bbbbbbbbbbbb: changed since"):
            await b.write_rollout(rec.Rollout(**{**seen_by_b.__dict__, "updated_at": 300.0}))
        with pytest.raises(records_client.Conflict, match="exists already"):
            await b.write_rollout(a_rollout())
        (now,) = await b.rollouts()
        assert (now.updated_at, now.meta.version) == (200.0, newer.meta.version)

    run(sim, "a", "b", body=body)


def test_an_unreadable_rollout_record_fails_the_read_naming_it_instead_of_reading_as_no_rollout(
    sim: testing.SimHandle,
) -> None:
    async def body(a: records_client.Records) -> None:
        await a.write_rollout(a_rollout("web"))
        written = await a.write_rollout(a_rollout("api"))
        obj = rec.encode_rollout(written, instance="fleet")
        obj["data"]["rollout.json"] = "{broken"
        await raw(a, "PUT", f"{CM}/{written.meta.name}", obj)
        with pytest.raises(
            rec.RecordError, match=rf"ConfigMap/fleet-system/{written.meta.name}: data.rollout"
        ):
            await a.rollouts()

    run(sim, "a", body=body)


def test_old_rollouts_beyond_the_kept_ones_are_deleted_over_their_versions(sim: testing.SimHandle) -> None:
    async def body(a: records_client.Records) -> None:
        for i, c in enumerate("cdef"):
            await a.write_rollout(a_rollout(revision=c * 40, started=float(i)))
        rs = await a.rollouts()
        assert await a.forget_rollouts(rec.beyond_kept(rs, keep=2)) == 2
        assert sorted(r.revision[0] for r in await a.rollouts()) == ["e", "f"]

    run(sim, "a", body=body)


def test_history_asked_of_either_replica_has_both_replicas_entries(sim: testing.SimHandle) -> None:
    async def body(a: records_client.Records, b: records_client.Records) -> None:
        await a.append([entry(1.0, "c1"), entry(3.0, "c1")])
        await b.append([entry(2.0, "c2")])
        await a.append([entry(4.0, "c1")])
        for s in (a, b):
            got = await s.history(hist.Query(limit=10))
            assert [(e.at, e.cluster) for e in got] == [(4.0, "c1"), (3.0, "c1"), (2.0, "c2"), (1.0, "c1")]
        assert [e.at for e in await b.history(hist.Query(cluster="c2", limit=10))] == [2.0]
        assert await a.bounds() == (4, 1.0)

    run(sim, "a", "b", body=body)


def test_a_full_history_segment_is_followed_by_a_new_one_and_expired_segments_are_pruned_whole(
    sim: testing.SimHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rec, "SEGMENT_ENTRIES", 3)

    async def body(a: records_client.Records) -> None:
        for at in (1.0, 2.0, 3.0, 10.0, 11.0):
            await a.append([entry(at, "c1")])
        _, listing = await raw(a, "GET", CM, params={"labelSelector": "fleet.dev/record=history"})
        assert sorted(i["metadata"]["name"] for i in listing["items"]) == [
            "fleet-history-a-000000",
            "fleet-history-a-000001",
        ]
        assert await a.prune(before=5.0) == 3  # the first segment's entries are all older
        assert [e.at for e in await a.history(hist.Query(limit=10))] == [11.0, 10.0]
        # A restarted writer of the same id continues after its newest segment.
        fresh = store(sim, "a")
        try:
            await fresh.append([entry(12.0, "c1")])
        finally:
            await fresh.client.aclose()
        assert [e.at for e in await a.history(hist.Query(limit=10))] == [12.0, 11.0, 10.0]

    run(sim, "a", body=body)


def test_a_status_summary_is_fenced_by_a_newer_owner_and_a_concurrent_write_is_a_conflict(
    sim: testing.SimHandle,
) -> None:
    async def body(a: records_client.Records, b: records_client.Records) -> None:
        doc = {"state": "Synced", "bundles": {}}
        old = summaries.Summary(shard=3, shards=8, writer="a", epoch=1, updated_at=1.0, clusters={"c1": doc})
        await a.write_summary(old)
        new = summaries.Summary(shard=3, shards=8, writer="b", epoch=2, updated_at=2.0, clusters={"c1": doc})
        written = await b.write_summary(new)
        assert (written.writer, written.epoch, written.meta.version != "") == ("b", 2, True)
        with pytest.raises(records_client.Fenced, match=r"fleet-status-3: written by b at epoch 2"):
            await a.write_summary(summaries.Summary(**{**old.__dict__, "updated_at": 3.0}))
        (only,) = await a.summaries()
        assert (only.writer, only.updated_at) == ("b", 2.0)

    run(sim, "a", "b", body=body)


def test_an_unreachable_management_cluster_is_a_state_error_not_an_empty_answer(
    sim: testing.SimHandle,
) -> None:
    async def body(a: records_client.Records) -> None:
        await a.write_rollout(a_rollout())
        await sim.faults("mgmt", {"path": "configmaps", "status": 503, "count": 1000})
        with pytest.raises(records_client.Unavailable) as raised:
            await a.rollouts()
        assert isinstance(raised.value, rec.errors.StateError)

    run(sim, "a", body=body)


def test_a_summary_written_again_by_its_owner_is_one_put_and_a_write_by_another_in_between_is_still_met(
    sim: testing.SimHandle,
) -> None:
    """Its owner writes a shard's summary every time its clusters change: over the version it wrote last,
    without reading it first; a newer owner's write in between changed that version, so the older owner's
    write is refused and, read again, fenced (never written over)."""

    def requests(since: int) -> list[tuple[str, str]]:
        return [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in sim.journal_sync("mgmt", since=since)]

    async def body(a: records_client.Records, b: records_client.Records) -> None:
        doc = {"state": "Synced", "bundles": {}}
        s = summaries.Summary(shard=3, shards=8, writer="a", epoch=1, updated_at=1.0, clusters={"c1": doc})
        first = await a.write_summary(s)
        mark = sim.journal_sync("mgmt")[-1]["seq"]
        again = await a.write_summary(summaries.Summary(**{**s.__dict__, "updated_at": 2.0}))
        assert requests(mark) == [("PUT", "fleet-status-3")]
        assert again.meta.version not in ("", first.meta.version)
        (stored,) = await a.summaries()
        assert (stored.updated_at, stored.meta.version) == (2.0, again.meta.version)
        await b.write_summary(
            summaries.Summary(**{**s.__dict__, "writer": "b", "epoch": 2, "updated_at": 3.0})
        )
        with pytest.raises(records_client.Fenced, match=r"fleet-status-3: written by b at epoch 2"):
            await a.write_summary(summaries.Summary(**{**s.__dict__, "updated_at": 4.0}))
        (stored,) = await a.summaries()
        assert (stored.writer, stored.updated_at) == ("b", 3.0)

    run(sim, "a", "b", body=body)


def test_a_summary_read_again_after_its_owner_rewrote_it_keeps_the_documents_of_the_clusters_that_did_not_change(
    sim: testing.SimHandle,
) -> None:
    """A shard's summary is rewritten whenever one of its clusters changes: the reader takes the clusters
    whose documents are the same as the ones it read before as those very objects (what each replica's
    status shows of them is made once per change of the cluster, not once per rewrite of its shard)."""

    async def body(a: records_client.Records, b: records_client.Records) -> None:
        doc = {"state": "Synced", "bundles": {"web": {"state": "Synced", "since": 1.0}}}
        s = summaries.Summary(
            shard=3, shards=8, writer="a", epoch=1, updated_at=1.0, clusters={"c1": doc, "c2": doc}
        )
        await a.write_summary(s)
        (first,) = await b.summaries()
        changed = {"state": "Failed", "bundles": {"web": {"state": "Failed", "since": 2.0}}}
        await a.write_summary(
            summaries.Summary(**{**s.__dict__, "updated_at": 2.0, "clusters": {"c1": doc, "c2": changed}})
        )
        (second,) = await b.summaries()
        assert second.meta.version != first.meta.version
        assert second.clusters == {"c1": doc, "c2": changed}
        assert second.clusters["c1"] is first.clusters["c1"]  # the same object: nothing made again
        assert second.clusters["c2"] is not first.clusters["c2"]

    run(sim, "a", "b", body=body)
