"""A stale replica's prune DELETE already on the wire when it stalls (docs/scaling.md "Fencing"): real
`fleet serve` replicas sharing one management cluster (`fleet sim`, the timings and helpers of
tests/e2e/test_replicas_failover.py). The delete carries the uid and resourceVersion of the object as the
stale round read it (docs/reconcile.md "Pruning rules"): landing after the new owner wrote the object, it
is refused 409 and deletes nothing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_replicas_failover import KILL_WITHIN, clusters_of, three_settled
from tests.support import replicas as rs
from tests.support.reconcile import configmap, live_objects

REBORN = "/api/v1/namespaces/apps/configmaps/reborn"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[rs.Fleet]:
    with ExitStack() as stack:
        yield rs.fleet_of(tmp_path, stack)


def settings(fleet: rs.Fleet, colour: str, **reborn: str) -> None:
    objects = [configmap("settings", colour=colour)] + ([configmap("reborn", **reborn)] if reborn else [])
    fleet.repo.bundle("settings", objects, namespace="apps", selector={})


def test_a_stale_replicas_prune_delete_held_on_the_wire_lands_after_the_new_owner_wrote_the_object_and_deletes_nothing(
    fleet: rs.Fleet,
) -> None:
    settings(fleet, "blue", kept="yes")
    fleet.repo.commit("blue, and reborn")
    a, b, c = three_settled(fleet)
    shard = min(a.shards())
    x = clusters_of(fleet, {shard})[0]
    # Its round of a revision that drops `reborn` applies, reads its fence again, then deletes `reborn`: the
    # sim holds that DELETE on x before processing it (sent, it lands late).
    held = {"hold": True, "method": "DELETE", "userAgent": rf"\(replica {a.id}\)", "path": f"^{REBORN}$"}
    fleet.sim.faults_sync(x, {**held, "count": 1})
    settings(fleet, "green")
    fleet.repo.commit("green, reborn dropped")
    fleet.wait(
        lambda: fleet.sim.fault_rules_sync(x)[0]["held"] == 1, within=30, what="its delete on the wire"
    )
    stopped = fleet.signal(a, signal.SIGSTOP)  # it stalls with the delete sent

    def stale() -> list[dict[str, Any]]:
        return fleet.requests(x, replica=a.id, method="DELETE", path=REBORN, after=stopped)

    try:
        # A newer revision brings `reborn` back, changed: the new owner writes it where the stale round
        # deletes it.
        settings(fleet, "yellow", kept="by the new owner")
        sha = fleet.repo.commit("yellow, reborn back")
        fleet.wait(
            lambda: fleet.settled([b, c]), within=KILL_WITHIN, what="the stalled replica's shards taken"
        )
        fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced by the others")
        taken, owner = fleet.acquisitions()[shard][-1]
        assert owner != a.id and taken > stopped
        wrote = fleet.requests(x, replica=owner, method="PATCH", path=REBORN, after=taken)
        assert [e["status"] for e in wrote[:1]] == [200], wrote
        assert stale() == []
        fleet.sim.clear_faults_sync(x)  # the stale delete lands now, after the new owner's write
        fleet.wait(lambda: len(stale()) == 1, within=10, what="the held delete answered")
    finally:
        fleet.signal(a, signal.SIGCONT)
    late = stale()
    print(
        f"held delete: the new owner wrote {wrote[0]['time'] - stopped:.1f}s after the stall, the stale "
        f"delete answered {late[0]['status']} {late[0]['time'] - stopped:.1f}s after it"
    )
    # Its preconditions (the version the stale round read) refused it: a 409, nothing deleted.
    assert [(e["status"], e["mutated"]) for e in late] == [(409, False)], late
    assert late[0]["seq"] > wrote[0]["seq"]
    assert live_objects(fleet.sim, x, namespace="apps")["reborn"]["data"] == {"kept": "by the new owner"}
    gone = [e for e in fleet.sim.journal_sync(x) if e["method"] == "DELETE" and e["path"] == REBORN]
    assert [e for e in gone if e["time"] > stopped and e["status"] < 300] == []
    fleet.wait(
        lambda: fleet.settled([a, b, c]), within=60, what="the resumed replica shares the shards again"
    )
    fleet.wait(lambda: fleet.synced_at(sha), within=30, what="every cluster Synced")
    assert f"cluster {x}: round stopped" in a.process.logs()
    for cluster in fleet.clusters:
        objects = live_objects(fleet.sim, cluster, namespace="apps")
        assert objects["reborn"]["data"] == {"kept": "by the new owner"}, cluster
    fleet.check_one_writer_per_shard(refused=[(x, late[0]["seq"])])
