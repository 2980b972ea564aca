"""Failover of replicas of `fleet serve` (docs/scaling.md): real processes sharing one management cluster
(`fleet sim`), 32 sim clusters over 16 shards (two per shard), short lease timings (8 s duration, 5 s renew
deadline, 1 s retry; tests/support/replicas.py). Each test ends by checking the whole journal of every
cluster against the management cluster's: each shard had at most one writer at every moment."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from fleet.core import sharding
from tests.support import replicas as rs
from tests.support.reconcile import configmap, live_objects, send

# The failover bounds of the issue, over the test's lease timings.
KILL_WITHIN = 20.0
TERM_WITHIN = 3.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[rs.Fleet]:
    with ExitStack() as stack:
        f = rs.fleet_of(tmp_path, stack)
        f.repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
        f.repo.commit("first")
        yield f


def head(fleet: rs.Fleet) -> str:
    return str(fleet.repo.repo.head.target)


def three_settled(fleet: rs.Fleet) -> list[rs.Replica]:
    reps = [fleet.start() for _ in range(3)]
    fleet.wait(lambda: fleet.settled(reps), within=60, what="3 replicas share every shard")
    fleet.wait(lambda: fleet.synced_at(head(fleet)), within=60, what="every cluster Synced")
    return reps


def clusters_of(fleet: rs.Fleet, shards: set[int]) -> list[str]:
    return [c for c in fleet.clusters if sharding.shard_of(c, shards=rs.SHARDS) in shards]


def test_a_killed_replicas_shards_are_owned_again_within_20s_and_its_clusters_converge(
    fleet: rs.Fleet,
) -> None:
    a, b, c = three_settled(fleet)
    lost = a.shards()
    fleet.signal(a, signal.SIGKILL)
    fleet.repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    sha = fleet.repo.commit("green")
    taken = fleet.wait(
        lambda: fleet.settled([b, c]), within=KILL_WITHIN, what="the killed replica's shards owned again"
    )
    converged = fleet.wait(lambda: fleet.synced_at(sha), within=30, what="its clusters converge")
    for cluster in clusters_of(fleet, lost):
        assert live_objects(fleet.sim, cluster, namespace="apps")["settings"]["data"] == {"colour": "green"}
    print(f"SIGKILL: shards owned again after {taken:.1f}s, every cluster Synced {converged:.1f}s later")
    assert fleet.check_one_writer_per_shard() > 0


def test_a_terminated_replica_hands_its_shards_over_within_3s(fleet: rs.Fleet) -> None:
    a, b, c = three_settled(fleet)
    fleet.signal(a, signal.SIGTERM)
    taken = fleet.wait(lambda: fleet.settled([b, c]), within=TERM_WITHIN, what="handover after SIGTERM")
    assert a.process.proc.wait(timeout=30) == 0
    assert "released lease fleet-shard-" in a.process.logs()
    print(f"SIGTERM: shards owned again after {taken:.1f}s")
    fleet.repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    sha = fleet.repo.commit("green")
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced after the handover")
    fleet.check_one_writer_per_shard()


def test_a_replica_cut_off_from_the_management_cluster_stops_writing_at_its_renew_deadline(
    fleet: rs.Fleet,
) -> None:
    a, b, c = three_settled(fleet)
    lost = a.shards()
    mine = clusters_of(fleet, lost)
    # Its requests to the management cluster hang: its ticks wait on them, only its clock tells the time.
    fleet.sim.faults_sync(rs.MANAGEMENT, {"userAgent": rf"\(replica {a.id}\)", "hang": True})
    cut = time.time()
    # It still has work: a new revision, and a person's change to an object it manages, after its deadline.
    fleet.repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    sha = fleet.repo.commit("green")
    deadline = fleet.last_renewal(a.id) + rs.RENEW_DEADLINE
    time.sleep(max(0.0, deadline + 0.3 - time.time()))  # the rule under test is about time
    for cluster in mine:
        patch = {"data": {"colour": "red"}}
        assert send(
            fleet.sim, cluster, "PATCH", "/api/v1/namespaces/apps/configmaps/settings", patch
        ).is_success
    fleet.wait(lambda: fleet.settled([b, c]), within=KILL_WITHIN, what="the cut-off replica's shards taken")
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced by the others")
    for cluster in mine:  # the drift was repaired, by the new owners
        assert live_objects(fleet.sim, cluster, namespace="apps")["settings"]["data"] == {"colour": "green"}
    assert fleet.last_renewal(a.id) + rs.RENEW_DEADLINE == deadline <= cut + rs.RENEW_DEADLINE + 0.5
    late = [w for w in fleet.writes() if w[1] == a.id and w[0] > deadline]
    assert late == [], f"writes of the cut-off replica after its renew deadline {deadline:.3f}: {late[:5]}"
    taken = min(t for s in lost for t, who in fleet.acquisitions()[s] if t > cut)
    last = max((w[0] for w in fleet.writes() if w[1] == a.id), default=0.0)
    print(f"cut off: last write {last - cut:.1f}s after the cut, first shard taken {taken - cut:.1f}s after")
    assert last < taken
    fleet.check_one_writer_per_shard()


def test_a_paused_replica_resumes_without_writing_under_its_old_leases_and_never_prunes_what_the_new_owner_applied(
    fleet: rs.Fleet,
) -> None:
    a, b, c = three_settled(fleet)
    mine = clusters_of(fleet, a.shards())
    fleet.signal(a, signal.SIGSTOP)
    try:
        fleet.repo.bundle(
            "settings",
            [configmap("settings", colour="green"), configmap("added", by="the new owner")],
            namespace="apps",
            selector={},
        )
        sha = fleet.repo.commit("green, and a new object")
        fleet.wait(
            lambda: fleet.settled([b, c]), within=KILL_WITHIN, what="the paused replica's shards taken"
        )
        fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced by the others")
        # Its first reads of the leases after it resumes hang for a while: only its clock can tell it.
        fleet.sim.faults_sync(rs.MANAGEMENT, {"userAgent": rf"\(replica {a.id}\)", "hang": True})
    finally:
        resumed = fleet.signal(a, signal.SIGCONT)
    time.sleep(2 * rs.RETRY)
    fleet.sim.clear_faults_sync(rs.MANAGEMENT)
    # Back, it still holds the old revision and its old view of its leases, past their deadline: it
    # writes nothing under them (its watches would put the old revision back), takes shards again only
    # by new acquisitions, and the newer revision record keeps its old revision from pruning the new object.
    fleet.wait(
        lambda: fleet.settled([a, b, c]), within=60, what="the resumed replica shares the shards again"
    )
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced")
    for cluster in mine:
        objects = live_objects(fleet.sim, cluster, namespace="apps")
        assert "added" in objects and objects["settings"]["data"] == {"colour": "green"}, cluster
    deletes = [w for w in fleet.writes() if w[3].startswith("DELETE") and w[3].endswith("/added")]
    assert deletes == []
    again = {
        s: min((t for t, who in got if who == a.id and t > resumed), default=None)
        for s, got in fleet.acquisitions().items()
    }
    for t, who, cluster, what in fleet.writes():
        if who == a.id and t > resumed:
            shard = sharding.shard_of(cluster, shards=rs.SHARDS)
            assert again[shard] is not None and again[shard] < t, f"{cluster}: {what} under an old lease"
    fleet.check_one_writer_per_shard()


def test_a_stale_replicas_writes_held_on_the_wire_past_its_lease_are_refused_as_conflicts_and_it_prunes_nothing(
    fleet: rs.Fleet,
) -> None:
    def settings(colour: str, *names: str) -> None:
        objects = [configmap("settings", colour=colour), *(configmap(n, kept="yes") for n in names)]
        fleet.repo.bundle("settings", objects, namespace="apps", selector={})

    settings("blue", "reborn", "spare", "old")
    fleet.repo.commit("blue, and reborn")
    a, b, c = three_settled(fleet)
    settings("blue", "reborn", "spare")
    dropped = fleet.repo.commit("old dropped: each cluster's revision record written before the delete")
    fleet.wait(lambda: fleet.synced_at(dropped), within=30, what="old dropped everywhere")
    shard = min(a.shards())
    x, y = clusters_of(fleet, {shard})
    mine = clusters_of(fleet, a.shards())
    epoch = fleet.lease_epoch(shard)
    inventory = "/api/v1/namespaces/fleet-system/configmaps/fleet-inventory-settings"
    record = "/api/v1/namespaces/fleet-system/configmaps/fleet-revision-[0-9a-f]+"
    # Its round of a revision that drops `reborn` asks its fence and writes the inventory's union, applies,
    # then writes the revision record before its prune. The sim holds two of its writes before processing
    # them: on x the inventory's union (sent, it lands late), on y the record (it stalls before its prune).
    held = {"hold": True, "method": "PATCH", "userAgent": rf"\(replica {a.id}\)", "count": 1}
    fleet.sim.faults_sync(x, {**held, "path": f"^{inventory}$"})
    fleet.sim.faults_sync(y, {**held, "path": f"^{record}$"})
    settings("green", "added", "spare")
    fleet.repo.commit("green, added, reborn dropped")
    fleet.wait(
        lambda: [fleet.sim.fault_rules_sync(n)[0]["held"] for n in (x, y)] == [1, 1],
        within=30,
        what="its writes on the wire",
    )
    stopped = fleet.signal(a, signal.SIGSTOP)  # it stalls with both sent

    def stale() -> list[dict[str, Any]]:
        return [
            *fleet.requests(x, replica=a.id, method="PATCH", path=inventory, after=stopped),
            *fleet.requests(y, replica=a.id, method="PATCH", path=record, after=stopped),
        ]

    try:
        # A newer revision brings `reborn` back: the new owner applies it where the stale round would prune it
        # (and drops `spare`: it writes the record too, before that delete).
        settings("yellow", "added", "reborn")
        sha = fleet.repo.commit("yellow, added, reborn back, spare dropped")
        fleet.wait(
            lambda: fleet.settled([b, c]), within=KILL_WITHIN, what="the stalled replica's shards taken"
        )
        fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced by the others")
        taken, owner = fleet.acquisitions()[shard][-1]
        assert owner != a.id and taken > stopped
        # The new owner wrote both over the versions the stalled replica had read, at a newer epoch.
        first = [
            *fleet.requests(x, replica=owner, method="PATCH", path=inventory, after=taken)[:1],
            *fleet.requests(y, replica=owner, method="PATCH", path=record, after=taken)[:1],
        ]
        assert [e["status"] for e in first] == [200, 200], first
        assert stale() == []
        for n in (x, y):
            fleet.sim.clear_faults_sync(n)  # the stale writes land now, after the new owner's
        fleet.wait(lambda: len(stale()) == 2, within=10, what="the held writes answered")
    finally:
        fleet.signal(a, signal.SIGCONT)
    late = stale()
    print(
        f"held writes: the new owner wrote {first[0]['time'] - stopped:.1f}s after the stall, the stale writes "
        f"answered {[e['status'] for e in late]} {late[0]['time'] - stopped:.1f}s after it"
    )
    # The compare-and-swap refused both: a 409, nothing changed.
    assert [(e["status"], e["mutated"]) for e in late] == [(409, False), (409, False)], late
    assert all(e["seq"] > f["seq"] for e, f in zip(late, first, strict=True))  # per cluster: x, then y
    fleet.wait(
        lambda: fleet.settled([a, b, c]), within=60, what="the resumed replica shares the shards again"
    )
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced")
    # Resumed, it reports both rounds stopped, not a success; it sends y no inventory write under its old
    # lease and deletes nothing anywhere: `reborn` stays.
    for n in (x, y):
        assert f"cluster {n}: round stopped" in a.process.logs(), n
    again = min(
        (t for t, who in fleet.acquisitions()[shard] if who == a.id and t > stopped), default=math.inf
    )
    assert [
        e
        for e in fleet.requests(y, replica=a.id, method="PATCH", path=inventory, after=stopped)
        if e["time"] < again
    ] == []
    deletes = [w for w in fleet.writes() if w[1] == a.id and w[3].startswith("DELETE") and w[0] > stopped]
    assert deletes == []
    for cluster in mine:
        objects = live_objects(fleet.sim, cluster, namespace="apps")
        assert {"added", "reborn"} <= set(objects), cluster
        assert objects["settings"]["data"] == {"colour": "yellow"}, cluster
    fence = fleet.inventory_fence(x, "settings")
    assert fence is not None and fence.startswith(f"fleet-shard-{shard}@")
    assert int(fence.rsplit("@", 1)[1]) > epoch, (fence, epoch)
    fleet.check_one_writer_per_shard(refused=[(n, e["seq"]) for n, e in zip((x, y), late, strict=True)])


def test_scaling_1_to_3_to_2_replicas_moves_at_most_two_thirds_then_a_third_of_the_clusters_plus_ten_percent(
    fleet: rs.Fleet,
) -> None:
    a = fleet.start()
    fleet.wait(lambda: fleet.settled([a]), within=60, what="one replica owns every shard")
    fleet.wait(lambda: fleet.synced_at(head(fleet)), within=60, what="every cluster Synced")
    one = fleet.cluster_owners()
    b, c = fleet.start(), fleet.start()
    fleet.wait(lambda: fleet.settled([a, b, c]), within=60, what="3 replicas share every shard")
    three = fleet.cluster_owners()
    fleet.signal(b, signal.SIGTERM)
    fleet.wait(lambda: fleet.settled([a, c]), within=60, what="2 replicas share every shard")
    two = fleet.cluster_owners()
    up, down = rs.moved(one, three), rs.moved(three, two)
    print(f"1 -> 3 moved {up:.0%} of the clusters, 3 -> 2 moved {down:.0%}")
    assert up <= 2 / 3 + 0.10
    assert down <= 1 / 3 + 0.10
    # Only what must move moves: the leaving replica's clusters, none of those the others kept.
    assert {n for n in three if two[n] != three[n]} == {n for n, o in three.items() if o == b.id}
    fleet.repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    sha = fleet.repo.commit("green")
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced")
    fleet.check_one_writer_per_shard()


def test_a_shard_lease_created_again_lifts_its_holders_epoch_above_the_fences_and_its_clusters_converge(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        fleet = rs.fleet_of(tmp_path, stack, transitions=5)  # every first holder writes its fence at epoch 6
        fleet.repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
        fleet.repo.commit("first")
        a = fleet.start()
        fleet.wait(lambda: fleet.settled([a]), within=60, what="one replica owns every shard")
        fleet.wait(lambda: fleet.synced_at(head(fleet)), within=60, what="every cluster Synced")
        shard = 3
        mine = clusters_of(fleet, {shard})
        path = f"/apis/coordination.k8s.io/v1/namespaces/fleet-system/leases/fleet-shard-{shard}"
        assert send(fleet.sim, rs.MANAGEMENT, "DELETE", path).is_success  # someone deletes it
        # It is taken again at epoch 1; the inventories there say 6. A new object: every inventory is written.
        fleet.wait(
            lambda: shard in a.shards() and fleet.lease_epoch(shard) == 1, within=30, what="re-acquired"
        )
        fleet.repo.bundle(
            "settings",
            [configmap("settings", colour="green"), configmap("added", by="the holder")],
            namespace="apps",
            selector={},
        )
        sha = fleet.repo.commit("green, and a new object")
        fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced, the shard's too")
        assert fleet.lease_epoch(shard) == 7
        for cluster in mine:
            fence = fleet.inventory_fence(cluster, "settings")
            assert fence == f"fleet-shard-{shard}@7", (cluster, fence)
        fleet.check_one_writer_per_shard()
