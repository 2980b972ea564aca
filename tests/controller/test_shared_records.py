"""Two replicas sharing rollouts, approvals, history and status through a management cluster
(fleet.controller.shared), in-process over real HTTP against `fleet sim`: only the coordinator decides, the
follower takes its decisions in, hands people's actions on and reports what its rounds saw."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from fleet.clients import records as records_client
from fleet.clients import statedb
from fleet.controller import rollouts
from fleet.core import errors, model, sharding
from fleet.core import history as hist
from fleet.core import records as rec
from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support import placement_builders as pb
from tests.support.inprocess import (
    REV,
    SHARDS,
    SYNCED,
    Owner,
    Replica,
    close,
    last_seq,
    management_client,
    management_sim,
    replica,
    two_clusters_on_two_shards,
    until,
)

__all__ = ["management_sim"]  # the fixture `sim`


class LateList(records_client.Records):
    """The records' client whose list of rollouts reaches its caller late once `hold` is called: read from
    the server at once (`listed` is set then), handed back only when `release` is set, as a large list still
    arriving while the answer to a write made after it has come back."""

    listed: anyio.Event | None = None
    release: anyio.Event | None = None

    def hold(self) -> None:
        self.listed, self.release = anyio.Event(), anyio.Event()

    async def rollouts_at(self) -> tuple[list[rec.Rollout], str]:
        found = await super().rollouts_at()
        if self.listed is not None and self.release is not None:
            self.listed.set()
            await self.release.wait()
        return found


def the_repo(c1: str, c2: str) -> model.Repo:
    spec = model.RolloutSpec(
        waves=(
            model.WaveSpec(name="canary", max_concurrency=model.Count(1)),
            model.WaveSpec(name="rest", approval=model.Approval.BEFORE),
        ),
        progress_deadline=600.0,
    )
    web = pb.bundle("web")
    web = model.Bundle(**{**web.__dict__, "rollout": spec})
    return pb.repo([pb.cluster(c1), pb.cluster(c2)], [web], revision=REV)


async def begin(r: Replica, c1: str, c2: str) -> None:
    await r.conductor.begin(
        revision=REV,
        author="ana",
        repo=the_repo(c1, c2),
        placed={"web": {c1: "h1", c2: "h2"}},
        waves={"web": ro.Membership(waves=(("canary", (c1,)), ("rest", (c2,))), errors={})},
        held=lambda c, b: (None, None),
        paused=(),
        context=None,
    )


def test_a_rollout_approved_through_the_follower_is_decided_by_the_coordinator_and_obeyed_by_the_follower(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await begin(a, c1, c2)
            await begin(b, c1, c2)
            assert "web" not in b.conductor.latest  # the follower starts nothing itself
            assert b.conductor.hold("web", c2) == rollouts.LEAVE  # nor applies the revision on its own word
            assert a.conductor.hold("web", c1) == rollouts.NEWEST  # the canary is in flight
            await b.shared.step()
            assert b.conductor.latest["web"].revision == REV
            # The canary (a's cluster) turns healthy: the rollout waits for a person before the rest.
            await a.conductor.observed(c1, SYNCED, holds={"web": rollouts.NEWEST})
            assert a.conductor.latest["web"].phase is ro.Phase.WAITING_APPROVAL
            await a.shared.step()
            await b.shared.step()
            assert b.conductor.latest["web"].phase is ro.Phase.WAITING_APPROVAL
            # An action that does not apply is refused by the follower itself (409), nothing is asked.
            with pytest.raises(ro.NotApplicable):
                await b.conductor.act("web", ro.Action.RESUME, actor="ana")
            # A person approves through the follower: asked of the coordinator, decided there.
            await b.conductor.act("web", ro.Action.APPROVE, actor="ana", reason="canary fine", wave="rest")
            assert b.conductor.latest["web"].phase is ro.Phase.WAITING_APPROVAL  # b decided nothing
            assert [x.action for x in await a.store.records.actions()] == ["approve"]
            await a.shared.step()
            assert a.conductor.latest["web"].phase is ro.Phase.PROGRESSING
            assert await a.store.records.actions() == []
            # The follower sees the decision and sends its cluster the revision.
            await b.shared.step()
            assert b.conductor.hold("web", c2) == rollouts.NEWEST
            assert c2 in b.woken
            # Its round's observation reaches the coordinator through its shard's status summary.
            await b.conductor.observed(c2, SYNCED, holds={"web": rollouts.NEWEST})
            assert b.conductor.latest["web"].phase is ro.Phase.PROGRESSING  # reported, not decided
            await b.shared.step()
            await a.shared.step()
            assert a.conductor.latest["web"].phase is ro.Phase.COMPLETED
            await b.shared.step()
            assert b.conductor.latest["web"].phase is ro.Phase.COMPLETED
            # History asked of either replica has the approval with its person and reason.
            for r in (a, b):
                entries = await anyio.to_thread.run_sync(r.store.query_history, hist.Query(limit=50))
                approvals = [e for e in entries if e.outcome == "approve"]
                assert [(e.actor, e.reason) for e in approvals] == [("ana", "canary fine")]
        finally:
            await close(a, b)

    anyio.run(main)


def test_the_status_of_either_replica_shows_every_cluster_and_a_shard_without_summary_is_an_error(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()
    c3 = next(f"c{i}" for i in range(100) if sharding.shard_of(f"c{i}", shards=SHARDS) == 3)

    def doc(state: str) -> dict[str, Any]:
        return {"state": state, "revision": REV, "bundles": {}}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False))
        a.shared._documents = lambda _wanted: {c1: doc("Synced")}
        b.shared._documents = lambda _wanted: {c2: doc("Failed")}
        try:
            await a.shared.step()
            await b.shared.step()
            await a.shared.step()
            known = {c1: doc("Pending"), c2: doc("Pending"), c3: doc("Pending")}
            for r, own in ((a, c1), (b, c2)):
                whole = r.shared.whole_fleet({"errors": [], "clusters": {own: known[own]}}, known=known)
                assert whole["clusters"][c1]["state"] == ("Pending" if r is a else "Synced")
                assert whole["clusters"][c2]["state"] == ("Failed" if r is a else "Pending")
                assert "status unknown: shard 3" in whole["clusters"][c3]["lastError"]
                assert whole["shards"]["missing"] == [2, 3] if r is a else [2, 3]
                assert any("no status summary for shards 2, 3" in e["message"] for e in whole["errors"])
        finally:
            await close(a, b)

    anyio.run(main)


def test_an_unreadable_rollout_record_is_reported_by_name_and_the_follower_keeps_what_it_knew(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False))
        try:
            await begin(a, c1, c2)
            await b.shared.step()
            known = b.conductor.latest["web"]
            (stored,) = a.store.rollouts.values()
            broken = rec.encode_rollout(stored, instance="fleet")
            broken["data"]["rollout.json"] = "{"
            await a.store.records.client.request(
                "PUT",
                f"/api/v1/namespaces/fleet-system/configmaps/{stored.meta.name}",
                what="test",
                body=broken,
            )
            await b.shared.step()
            assert b.shared.problem is not None
            assert (
                f"ConfigMap/fleet-system/{stored.meta.name}: data.rollout.json is not JSON"
                in b.shared.problem
            )
            assert b.conductor.latest["web"] == known
            whole = b.shared.whole_fleet({"errors": [], "clusters": {}}, known={})
            assert any(stored.meta.name in e["message"] for e in whole["errors"])
        finally:
            await close(a, b)

    anyio.run(main)


@pytest.mark.slow  # seconds: 503s retried until the request budget is spent
def test_an_unreachable_management_cluster_keeps_history_entries_says_so_and_fails_reads_instead_of_dropping_them(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            row = statedb.ClusterRow(name="c1", state="Synced")
            entry = hist.Entry(at=1.0, cluster="c1", bundle="web", outcome="Synced", to_revision=REV)
            await sim.faults("mgmt", {"path": "configmaps", "status": 503, "count": 1000})
            await anyio.to_thread.run_sync(lambda: a.store.record_cluster(row, history=(entry,)))
            assert "c1" in a.store.load().clusters  # the replica's own row is in its database
            with pytest.raises(errors.StateError, match="management cluster"):
                await a.store.history.flush()
            with pytest.raises(errors.StateError, match="management cluster"):
                await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=10))
            await a.shared.step()  # the status says so
            assert a.shared.problem is not None and "history: 1 entries not written yet" in a.shared.problem
            await sim.clear_faults("mgmt")
            await anyio.to_thread.run_sync(
                a.store.record_history, (replace(entry, at=2.0, outcome="Failed"),)
            )
            got = await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=10))
            assert [(e.cluster, e.outcome) for e in got] == [("c1", "Failed"), ("c1", "Synced")]
            await a.shared.step()
            assert a.shared.problem is None
        finally:
            await close(a)

    anyio.run(main)


def configmap_writes(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in journal if e["method"] in ("POST", "PUT") and "/configmaps" in e["path"]]


def test_a_replicas_rounds_record_history_without_waiting_for_the_management_cluster_in_few_appends(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    """A round's history entries wait for the next append (one segment rewrite for every entry waiting),
    not each for a rewrite of its own: 50 rounds, one append; every entry there, in order."""

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            since = (await sim.journal("mgmt"))[-1]["seq"]
            for i in range(50):
                row = statedb.ClusterRow(name=f"c{i}", state="Synced")
                entry = hist.Entry(
                    at=10.0 + i, cluster=f"c{i}", bundle="web", outcome="Synced", to_revision=REV
                )
                await anyio.to_thread.run_sync(lambda: a.store.record_cluster(row, history=(entry,)))  # noqa: B023
            got = await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=100))
            assert [e.cluster for e in got] == [f"c{i}" for i in reversed(range(50))]
            assert len(configmap_writes(await sim.journal("mgmt", since=since))) == 1
        finally:
            await close(a)

    anyio.run(main)


def test_the_history_writer_appends_at_most_once_per_gap_what_came_meanwhile_in_one_append(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        writer = a.store.history
        try:
            entries = [
                hist.Entry(at=1.0 + i, cluster=f"c{i}", bundle="web", outcome="Synced", to_revision=REV)
                for i in range(4)
            ]
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: writer.run(retry=0.2, gap=3.0))
                await anyio.to_thread.run_sync(a.store.record_history, entries[:1])
                with anyio.fail_after(10):
                    while writer.appends < 1:  # noqa: ASYNC110 (polls: no event tells of an append)
                        await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(a.store.record_history, entries[1:2])
                await anyio.sleep(0.3)  # written alone by now if appended as it came
                await anyio.to_thread.run_sync(a.store.record_history, entries[2:])
                with anyio.fail_after(10):
                    while writer.pending:  # noqa: ASYNC110 (polls: no event tells of an append)
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            assert writer.appends == 2
            got = await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=10))
            assert [e.cluster for e in got] == ["c3", "c2", "c1", "c0"]
        finally:
            await close(a)

    anyio.run(main)


def test_the_history_writer_writes_entries_as_they_come_and_what_waits_when_it_is_stopped(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            entry = hist.Entry(at=1.0, cluster="c1", bundle="web", outcome="Synced", to_revision=REV)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: a.store.history.run(retry=0.2))
                await anyio.to_thread.run_sync(a.store.record_history, (entry,))
                with anyio.fail_after(10):
                    while a.store.history.pending:  # noqa: ASYNC110 (polls: no event tells of an append)
                        await anyio.sleep(0.01)
                assert [[e.cluster for e in s.entries] for s in await a.store.records._segments()] == [["c1"]]
                # Held by the management cluster's faults, an entry waits; stopping the writer writes it.
                await sim.faults("mgmt", {"path": "configmaps", "status": 503, "count": 2})
                later = replace(entry, at=2.0, cluster="c2")
                await anyio.to_thread.run_sync(a.store.record_history, (later,))
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            assert a.store.history.pending == 0
            got = await anyio.to_thread.run_sync(a.store.query_history, hist.Query(limit=10))
            assert [e.cluster for e in got] == ["c2", "c1"]
        finally:
            await close(a)

    anyio.run(main)


def test_a_shard_summary_over_the_size_limit_is_reported_by_name_and_the_other_shards_still_shown(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    names = {
        s: [f"c{i}" for i in range(3000) if sharding.shard_of(f"c{i}", shards=SHARDS) == s] for s in (0, 1)
    }
    big = {n: {"state": "Synced", "lastError": "x" * 2000} for n in names[0][:500]}  # about 1 MB
    small = {names[1][0]: {"state": "Synced"}}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 1}), coordinator=True))
        a.shared._documents = lambda _wanted: {**big, **small}
        try:
            await a.shared.step()
            assert a.shared.problem is not None
            assert "ConfigMap/fleet-system/fleet-status-0: the record would hold" in a.shared.problem
            assert list(a.shared.merged.clusters) == [names[1][0]]
            assert a.shared.merged.missing == (0, 2, 3)
        finally:
            await close(a)

    anyio.run(main)


def test_a_stale_coordinators_rollout_write_is_a_conflict_and_it_takes_the_records_in_again(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b_owner = Owner("b", frozenset({1}), coordinator=False)
        b = await replica(sim, tmp_path, b_owner)
        try:
            await begin(a, c1, c2)
            await begin(b, c1, c2)
            await b.shared.step()
            # b becomes the coordinator while a still believes it is (a paused process, say).
            b_owner.coordinator = True
            await b.shared.step()
            await a.conductor.act("web", ro.Action.PAUSE, actor="ana", reason="from a")
            # b acts on the rollout as it last read it: its write meets a's newer one.
            with pytest.raises(records_client.Conflict, match=r"fleet-rollout-web-c{12}: changed since"):
                await b.conductor.act("web", ro.Action.PAUSE, actor="bo", reason="from b")
            (stored,) = await b.store.records.rollouts()
            assert [x["actor"] for x in stored.doc["rollout"]["actions"]] == ["ana"]  # not overwritten
            await b.shared.step()  # b reads the records again before deciding anything more
            assert b.conductor.latest["web"].paused
            assert [x.actor for x in b.conductor.latest["web"].actions] == ["ana"]
            assert not b.store.conflicted
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_cluster_its_shards_summary_does_not_hold_yet_is_listed_as_unknown_never_left_out(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()
    # A cluster of b's shard that b has not written yet (a cluster file added a moment ago).
    new = next(
        f"c{i}" for i in range(100) if sharding.shard_of(f"c{i}", shards=SHARDS) == 1 and f"c{i}" != c2
    )

    def doc(state: str) -> dict[str, Any]:
        return {"state": state, "revision": REV, "bundles": {}}

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2, 3}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False))
        b.shared._documents = lambda _wanted: {c2: doc("Synced")}
        try:
            await b.shared.step()
            await a.shared.step()
            known = {c1: doc("Synced"), c2: doc("Pending"), new: doc("Pending")}
            whole = a.shared.whole_fleet({"errors": [], "clusters": {c1: known[c1]}}, known=known)
            assert whole["clusters"][c2]["state"] == "Synced"
            assert (
                "summary of shard 1 (written by b) does not hold this cluster yet"
                in (whole["clusters"][new]["lastError"])
            )
            assert any(
                f"clusters {new}: not in their shard's status summary" in e["message"]
                for e in whole["errors"]
            )
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_follower_that_left_its_cluster_as_it_was_wakes_it_when_it_adopts_the_coordinators_rollout(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # docs/benchmarks.md, "Two replicas' start": the follower's first round of its cluster came before the
    # coordinator's rollout (the bundle left as it is); taking that rollout in must give the cluster a round
    # now, not at the periodic resync minutes later.
    c1, c2 = two_clusters_on_two_shards()
    one_wave = ro.Membership(waves=(("all", (c1, c2)),), errors={})
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True)),)
    )
    repo = the_repo(c1, c2)
    repo = model.Repo(
        **{
            **repo.__dict__,
            "bundles": {"web": model.Bundle(**{**repo.bundles["web"].__dict__, "rollout": spec})},
        }
    )

    async def start(r: Replica) -> None:
        await r.conductor.begin(
            revision=REV,
            author="ana",
            repo=repo,
            placed={"web": {c1: "h1", c2: "h2"}},
            waves={"web": one_wave},
            held=lambda c, b: (None, None),
            paused=(),
            context=None,
        )

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await start(b)  # the follower has the revision first: its round of c2 leaves web as it is
            assert b.conductor.hold("web", c2) == rollouts.LEAVE
            await b.shared.step()
            assert "web" not in b.conductor.latest and b.woken == []
            await start(a)
            assert a.conductor.hold("web", c2) == rollouts.NEWEST  # one wave: every cluster at once
            await a.shared.step()
            await b.shared.step()
            assert b.conductor.latest["web"].revision == REV
            assert b.conductor.hold("web", c2) == rollouts.NEWEST
            assert c2 in b.woken
        finally:
            await close(a, b)

    anyio.run(main)


# -- one writer per rollout record, and none of its writes lost (docs/scaling.md, "Who writes what") -------


def rollout_writes(sim: testing.SimHandle, since: int) -> list[tuple[str, int]]:
    """(method, status) of every write over a rollout record the management cluster journaled after `since`
    (the records are created before: a create, to the collection's path, is not told apart here)."""
    return [
        (e["method"], e["status"])
        for e in sim.journal_sync("mgmt", since=since)
        if e["method"] in ("PUT", "DELETE") and "/configmaps/fleet-rollout-" in e["path"]
    ]


def test_a_rollout_written_while_the_rollouts_are_read_is_not_set_back_by_that_read(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # docs/benchmarks.md, "Two replicas at 1,000 clusters": the period's list of the rollouts, read before the
    # coordinator's write and answered after it, put the older resourceVersion back: every write after it was
    # a conflict with the coordinator's own write.
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True), records_type=LateList)
        records = a.store.records
        assert isinstance(records, LateList)
        try:
            await begin(a, c1, c2)  # the canary sent: the rollout record written
            records.hold()
            assert records.listed is not None and records.release is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.store.read_rollouts)
                await records.listed.wait()  # read from the server, not yet handed back
                await a.conductor.observed(c1, SYNCED, holds={"web": rollouts.NEWEST})  # written meanwhile
                records.release.set()
            since = last_seq(sim)
            # The next decision is written over the version the coordinator wrote itself: no conflict.
            await a.conductor.act("web", ro.Action.APPROVE, actor="ana", reason="canary fine", wave="rest")
            assert rollout_writes(sim, since) == [("PUT", 200)]
            (stored,) = await records.rollouts()
            assert stored.doc["rollout"]["phase"] == str(ro.Phase.PROGRESSING)
            assert not a.store.conflicted
        finally:
            await close(a)

    anyio.run(main)


def test_a_rollout_record_this_replica_wrote_at_a_version_it_did_not_see_is_read_again_and_written_over(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # A write whose answer was lost (a timeout after the server took it) leaves the record at a version this
    # replica wrote but never saw: its next write is a conflict with itself. The record names its writer:
    # this replica reads it again and writes over it; another replica's record it does not overwrite
    # (test_a_stale_coordinators_rollout_write_is_a_conflict_and_it_takes_the_records_in_again).
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        same = records_client.Records(management_client(sim), instance="fleet", writer="a")
        try:
            await begin(a, c1, c2)
            (found,) = await same.rollouts()
            # The lost answer's write: the same replica, a newer version (a write that changes nothing
            # does not make one).
            await same.write_rollout(replace(found, updated_at=found.updated_at + 1))
            since = last_seq(sim)
            await a.conductor.observed(c1, SYNCED, holds={"web": rollouts.NEWEST})
            assert rollout_writes(sim, since) == [("PUT", 409), ("PUT", 200)]
            (stored,) = await same.rollouts()
            assert stored.doc["rollout"]["phase"] == str(ro.Phase.WAITING_APPROVAL)
            assert stored.writer == "a"  # label fleet.dev/writer
            assert not a.store.conflicted
        finally:
            await same.client.aclose()
            await close(a)

    anyio.run(main)


def test_a_follower_writes_no_rollout_record_even_when_it_saves_everything_again(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # After a failed write the engine saves everything it holds again (Persistence._save_everything: every
    # rollout of its Conductor among it): a follower's copies of the coordinator's rollouts must not be
    # written back, or the coordinator's next write meets the follower's version.
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1}), coordinator=False))
        try:
            await begin(a, c1, c2)
            await b.shared.step()
            assert b.conductor.latest["web"].revision == REV
            since = last_seq(sim)
            await anyio.to_thread.run_sync(lambda: b.store.record_rollouts(b.conductor.rows()))
            assert rollout_writes(sim, since) == []
            await a.conductor.observed(c1, SYNCED, holds={"web": rollouts.NEWEST})
            assert rollout_writes(sim, since) == [("PUT", 200)]
            assert not a.store.conflicted
        finally:
            await close(a, b)

    anyio.run(main)


def test_the_coordinator_takes_a_periods_observations_of_the_other_replicas_clusters_in_with_one_write(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # Fed one cluster at a time, each observation was a decision and a write of the whole rollout record:
    # at 500 clusters of the other replica, 500 writes of a record of hundreds of KiB in one period.
    mine = [f"c{i}" for i in range(200) if sharding.shard_of(f"c{i}", shards=SHARDS) == 0][:2]
    theirs = [f"c{i}" for i in range(200) if sharding.shard_of(f"c{i}", shards=SHARDS) == 1][:6]
    every = mine + theirs
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True)),),
        progress_deadline=600.0,
    )
    web = model.Bundle(**{**pb.bundle("web").__dict__, "rollout": spec})
    repo = pb.repo([pb.cluster(c) for c in every], [web], revision=REV)

    async def start(r: Replica) -> None:
        await r.conductor.begin(
            revision=REV, author="ana", repo=repo, placed={"web": {c: f"h-{c}" for c in every}},
            waves={"web": ro.Membership(waves=(("all", tuple(every)),), errors={})},
            held=lambda c, b: (None, None), paused=(), context=None,
        )  # fmt: skip

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await start(a)
            await start(b)
            await b.shared.step()
            for c in theirs:
                await b.conductor.observed(c, SYNCED, holds={"web": rollouts.NEWEST})
            await b.shared.step()  # its shard's summary carries the six observations
            since = last_seq(sim)
            await a.shared.step()
            members = a.conductor.latest["web"].members
            assert all(members[c].phase is ro.ClusterPhase.HEALTHY for c in theirs)
            # Healthy clusters of a wave still in flight decide nothing: their write waits for the
            # conductor's next one (`Conductor.run` makes it within a second), one for all six.
            assert rollout_writes(sim, since) == []
            await a.conductor.flush()
            assert rollout_writes(sim, since) == [("PUT", 200)]
        finally:
            await close(a, b)

    anyio.run(main)


def test_saving_everything_again_writes_no_rollout_stored_as_it_is(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # After a failed write the engine saves every rollout again: at 1,000 clusters a record is hundreds of
    # KiB, and rewriting each unchanged one at every save is what the management cluster spends its time on.
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0}), coordinator=True))
        try:
            await begin(a, c1, c2)
            since = last_seq(sim)
            await anyio.to_thread.run_sync(lambda: a.store.record_rollouts(a.conductor.rows()))
            await a.store.read_rollouts()
            await anyio.to_thread.run_sync(lambda: a.store.record_rollouts(a.conductor.rows()))
            assert rollout_writes(sim, since) == []
        finally:
            await close(a)

    anyio.run(main)


@pytest.mark.slow  # a second of real time: the replica's own tasks
def test_a_follower_sends_its_cluster_the_revision_as_the_coordinator_starts_it_not_at_its_next_period(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    # The follower learnt of the coordinator's decisions by listing the rollouts every period (a retry
    # period, 2 s by default, more while a list of large records is read): its clusters got each commit
    # that much after the coordinator's own. It watches the records: a change reaches it as it is written.
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False), period=60.0)
        try:
            await begin(a, c1, c2)  # the canary (a's cluster) started
            await begin(b, c1, c2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.shared.run)  # lists the rollouts now, then once a minute
                await until(
                    lambda: "web" in b.conductor.latest, within=10, what="the follower lists the rollout"
                )
                assert b.conductor.hold("web", c2) == rollouts.LEAVE  # the rest wave waits for approval
                await a.conductor.observed(c1, SYNCED, holds={"web": rollouts.NEWEST})
                await a.conductor.act("web", ro.Action.APPROVE, actor="ana", wave="rest")  # c2 started
                took = await until(
                    lambda: b.conductor.hold("web", c2) == rollouts.NEWEST and c2 in b.woken,
                    within=5,
                    what="the follower sends its cluster the revision the coordinator started it at",
                )
                print(f"coordinator's write -> follower's cluster woken: {took:.2f}s")
                tg.cancel_scope.cancel()
        finally:
            await close(a, b)

    anyio.run(main)
