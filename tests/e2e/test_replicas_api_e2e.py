"""The HTTP API of replicas asked about what another replica owns (docs/scaling.md, "State of record"):
two real `fleet serve` processes on one management cluster (`fleet sim`), 32 sim clusters over 16 shards
(tests/support/replicas.py), polling only once an hour. `fleet status --revision` asked of either lists
every cluster as a holder; a reconcile asked of the replica that does not own a cluster is run by its
owner; a webhook to one replica makes both take the new revision at once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from fleet.controller import webhook
from tests.support import replicas as rs
from tests.support.reconcile import configmap

SECRET = "push-secret"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[rs.Fleet]:
    with ExitStack() as stack:
        f = rs.fleet_of(tmp_path, stack)
        f.repo.bundle("settings", [configmap("settings", colour="blue")], namespace="apps", selector={})
        f.repo.commit("first")
        yield f


def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_either_replica_answers_for_the_whole_fleet_and_hands_reconciles_and_pushes_on(
    fleet: rs.Fleet, tmp_path: Path
) -> None:
    secret = tmp_path / "webhook-secret"
    secret.write_text(SECRET)
    # Polling once an hour: only the webhook (or its announcement) makes a replica fetch.
    extra = ("--interval", "1h", "--webhook-secret-file", str(secret))
    a, b = fleet.start(*extra), fleet.start(*extra)
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    first = str(fleet.repo.repo.head.target)
    fleet.wait(lambda: fleet.synced_at(first), within=90, what="every cluster Synced")

    # fleet status --revision asked of either replica: every cluster holds it, whoever owns it.
    for r in (a, b):
        fleet.wait(
            lambda r=r: (
                set(r.process.get(f"/api/v1/revisions/{first}").json()["holders"]) == set(fleet.clusters)
            ),
            within=10,
            what=f"{r.id} lists every holder (the summaries written)",
        )
        shown = fleet_cli("status", "--server", r.process.url, "--revision", first[:12], "--format", "json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        doc = json.loads(shown.stdout)
        assert sorted(doc["holders"]) == sorted(fleet.clusters)
        assert doc["unknown"] == {}

    # A reconcile asked of the replica that does not own the cluster: its owner runs a round. Who owns what
    # is read at each ask (a replica starved on a loaded machine may lose its leases, and the shards be
    # shared out anew, at any time before), and must not change during it.
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    owners = fleet.cluster_owners()
    theirs = next(c for c in fleet.clusters if owners[c] == b.id)
    before = b.doc()["clusters"][theirs]["lastSyncAt"]
    asked = a.process.post("/api/v1/reconcile", params={"cluster": theirs})
    assert fleet.cluster_owners() == owners, f"shards moved during the ask:\n{fleet.summary()}"
    assert asked.status_code == 202, asked.text
    assert asked.json()["handedOn"][theirs]["owner"] == b.id
    took = fleet.wait(
        lambda: b.doc()["clusters"][theirs]["lastSyncAt"] != before,
        within=10,
        what="b's round of its cluster",
    )
    print(f"reconcile asked of the other replica -> a round on the owner: {took:.1f}s")
    # A bundle asked of the replica started second: the clusters the revision places it on that the first
    # owns are handed on (b never reconciled them: it knows their bundles from the revision it placed).
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    owners = fleet.cluster_owners()
    asked = b.process.post("/api/v1/reconcile", params={"bundle": "settings"})
    assert fleet.cluster_owners() == owners, f"shards moved during the ask:\n{fleet.summary()}"
    assert asked.status_code == 202, asked.text
    assert sorted(asked.json()["handedOn"]) == sorted(c for c in fleet.clusters if owners[c] == a.id)
    assert sorted(asked.json()["queued"]) == sorted(c for c in fleet.clusters if owners[c] == b.id)

    # A webhook to one replica: both fetch the new commit at once (not at their next poll, in an hour).
    fleet.repo.bundle("settings", [configmap("settings", colour="green")], namespace="apps", selector={})
    second = fleet.repo.commit("green")
    body = b"{}"
    pushed = a.process.post(
        "/api/v1/webhook",
        content=body,
        headers={"X-Hub-Signature-256": webhook.sign_github(body=body, secret=SECRET.encode())},
    )
    assert pushed.status_code == 202, pushed.text
    took = fleet.wait(lambda: b.doc()["revision"] == second, within=15, what="b fetched the pushed commit")
    print(f"webhook to one replica -> the other fetched: {took:.1f}s")
    took = fleet.wait(lambda: fleet.synced_at(second), within=60, what="every cluster Synced at the push")
    print(f"webhook to one replica -> every cluster Synced: {took:.1f}s")
