"""The state of record shared by replicas (docs/scaling.md, "State of record"): two real `fleet serve`
processes on one management cluster (`fleet sim`), 32 sim clusters over 16 shards (tests/support/replicas.py).
A rollout approved through the replica that does not coordinate is decided by the coordinator and obeyed by
both; `fleet status` against either replica lists every cluster; history asked of either has both
replicas' entries; the records are ConfigMaps in fleet-system that kubectl reads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support import replicas as rs
from tests.support.reconcile import configmap, live_objects

CANARY_THEN_APPROVAL: dict[str, Any] = {
    "waves": [
        {"name": "canary", "placement": {"clusters": []}, "maxConcurrency": 1},
        {"name": "rest", "maxConcurrency": "100%", "approval": "before"},
    ],
    "progressDeadline": "60s",
}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[rs.Fleet]:
    with ExitStack() as stack:
        f = rs.fleet_of(tmp_path, stack)
        f.repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
        f.repo.commit("first")
        yield f


def rollout(doc: dict[str, Any]) -> dict[str, Any]:
    return (doc.get("rollouts") or {}).get("settings") or {}


def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_two_replicas_share_rollouts_approvals_history_and_status_through_the_management_cluster(
    fleet: rs.Fleet,
) -> None:
    a, b = fleet.start(), fleet.start()
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    first = str(fleet.repo.repo.head.target)
    fleet.wait(lambda: fleet.synced_at(first), within=90, what="every cluster Synced")

    coordinator, follower = (a, b) if a.doc()["replica"]["coordinating"] else (b, a)
    assert not follower.doc()["replica"]["coordinating"]
    # The canary is one of the coordinator's clusters; the rest wave holds clusters of both replicas.
    canary = next(c for c in fleet.clusters if c in coordinator.doc()["replica"]["clusters"])
    waves = json.loads(json.dumps(CANARY_THEN_APPROVAL))
    waves["waves"][0]["placement"]["clusters"] = [canary]
    fleet.repo.bundle(
        "settings", [configmap("settings", colour="green")], namespace="apps", selector={}, rollout=waves
    )
    second = fleet.repo.commit("green, canary first")

    def waiting(doc: dict[str, Any]) -> bool:
        r = rollout(doc)
        return r.get("revision") == second and r.get("state") == "WaitingApproval"

    fleet.wait(
        lambda: all(waiting(r.doc()) for r in (a, b)), within=60, what="both replicas see the rollout wait"
    )
    followers_clusters = follower.doc()["replica"]["clusters"]
    assert followers_clusters
    for c in followers_clusters:  # not reached: still blue
        assert live_objects(fleet.sim, c, namespace="apps")["settings"]["data"] == {"colour": "blue"}

    approved = follower.process.post(
        "/api/v1/rollouts/settings/approve", params={"wave": "rest", "actor": "ana", "reason": "canary fine"}
    )
    assert approved.status_code == 202, approved.text

    def completed(doc: dict[str, Any]) -> bool:
        r = rollout(doc)
        return r.get("revision") == second and r.get("state") == "Completed"

    took = fleet.wait(
        lambda: all(completed(r.doc()) for r in (a, b)), within=60, what="completed on both replicas"
    )
    print(f"approval through the follower -> Completed on both replicas: {took:.1f}s")
    fleet.wait(lambda: fleet.synced_at(second), within=60, what="every cluster Synced at the second revision")
    for c in followers_clusters:  # the follower obeyed the coordinator's decision
        assert live_objects(fleet.sim, c, namespace="apps")["settings"]["data"] == {"colour": "green"}
    actions = rollout(coordinator.doc())["actions"]
    assert [(x["action"], x["actor"], x["reason"]) for x in actions] == [("approve", "ana", "canary fine")]

    # fleet status against either replica lists every cluster of the fleet.
    for r in (a, b):
        shown = fleet_cli("status", "--server", r.process.url, "--format", "json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        doc = json.loads(shown.stdout)
        assert sorted(doc["clusters"]) == sorted(fleet.clusters)
        assert all(doc["clusters"][c]["revision"] == second for c in fleet.clusters)

    # History asked of either replica has both replicas' entries (each replica records its own rounds).
    owners = fleet.cluster_owners()
    for r in (a, b):
        answer = r.process.get("/api/v1/history", params={"limit": "1000"})
        assert answer.status_code == 200, answer.text
        entries = answer.json()["entries"]
        synced = {e["cluster"] for e in entries if e["outcome"] == "Synced" and e["toRevision"] == second}
        assert synced == set(fleet.clusters)
        assert {owners[c] for c in synced} == {a.id, b.id}
        assert [(e["actor"], e["reason"]) for e in entries if e["outcome"] == "approve"] == [
            ("ana", "canary fine")
        ]

    # The records are ConfigMaps of fleet-system, readable with kubectl.
    kubectl = Path(sys.executable).parent / "kubectl"
    listed = subprocess.run(
        [str(kubectl), "--kubeconfig", str(fleet.sim.kubeconfig), "--context", rs.MANAGEMENT, "-n", "fleet-system",
         "get", "configmaps", "-l", "fleet.dev/record=rollout", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    states = {i["data"]["revision"]: i["data"]["state"] for i in json.loads(listed.stdout)["items"]}
    assert states[second] == "Completed"


def test_a_rollout_waiting_for_approval_continues_under_the_new_coordinator_when_the_old_one_is_killed(
    fleet: rs.Fleet,
) -> None:
    a, b = fleet.start(), fleet.start()
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    first = str(fleet.repo.repo.head.target)
    fleet.wait(lambda: fleet.synced_at(first), within=90, what="every cluster Synced")
    coordinator, survivor = (a, b) if a.doc()["replica"]["coordinating"] else (b, a)
    dead_clusters = coordinator.doc()["replica"]["clusters"]
    waves = json.loads(json.dumps(CANARY_THEN_APPROVAL))
    waves["waves"][0]["placement"]["clusters"] = [dead_clusters[0]]
    fleet.repo.bundle(
        "settings", [configmap("settings", colour="green")], namespace="apps", selector={}, rollout=waves
    )
    second = fleet.repo.commit("green, canary first")
    fleet.wait(
        lambda: (
            rollout(survivor.doc()).get("state") == "WaitingApproval"
            and rollout(survivor.doc()).get("revision") == second
        ),
        within=60,
        what="the survivor sees the rollout wait",
    )

    fleet.signal(coordinator, signal.SIGKILL)
    fleet.wait(
        lambda: survivor.doc()["replica"]["coordinating"] and fleet.settled([survivor]),
        within=30,
        what="the survivor coordinates and owns every shard",
    )
    # The rollout is where it was: still waiting, nothing past the canary sent.
    assert rollout(survivor.doc())["state"] == "WaitingApproval"
    for c in fleet.clusters:
        if c != dead_clusters[0]:
            assert live_objects(fleet.sim, c, namespace="apps")["settings"]["data"] == {"colour": "blue"}
    approved = survivor.process.post(
        "/api/v1/rollouts/settings/approve",
        params={"wave": "rest", "actor": "bo", "reason": "after failover"},
    )
    assert approved.status_code == 202, approved.text
    fleet.wait(lambda: rollout(survivor.doc()).get("state") == "Completed", within=60, what="completed")
    fleet.wait(lambda: fleet.synced_at(second), within=60, what="every cluster Synced at the second revision")
    # The killed replica's history stays: its rounds of the first revision are still answered.
    entries = survivor.process.get("/api/v1/history", params={"limit": "1000"}).json()["entries"]
    first_synced = {e["cluster"] for e in entries if e["outcome"] == "Synced" and e["toRevision"] == first}
    assert set(dead_clusters) <= first_synced
