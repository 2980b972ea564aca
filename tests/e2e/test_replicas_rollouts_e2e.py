"""Commits rolled out by two real `fleet serve` replicas sharing one management cluster (`fleet sim`), 32 sim
clusters over 16 shards (tests/support/replicas.py), every bundle in a single wave of 100 % as in
bench_scale (docs/benchmarks.md, "Two replicas at 1,000 clusters"): each commit reaches every cluster of
both replicas; the management cluster's journal says that only the coordinator wrote the rollout records,
that none of its writes met a conflict, and that the follower learnt of them through a watch, not by
listing them every period."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support import replicas as rs
from tests.support.reconcile import configmap

ONE_WAVE: dict[str, Any] = {"waves": [{"name": "all", "maxConcurrency": "100%"}]}
BUNDLES = ("b0", "b1", "b2")
COMMITS = 3


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[rs.Fleet]:
    with ExitStack() as stack:
        f = rs.fleet_of(tmp_path, stack)
        for b in BUNDLES:
            f.repo.bundle(
                b, [configmap("settings", colour="blue")], namespace=b, selector={}, rollout=ONE_WAVE
            )
        f.repo.commit("first")
        yield f


def rollout_requests(fleet: rs.Fleet, since: int) -> list[dict[str, Any]]:
    """The management cluster's journal entries about rollout records after `since`: writes over a record,
    lists and watches of them (a create goes to the collection's path: not told apart here)."""
    out = []
    for e in fleet.sim.journal_sync(rs.MANAGEMENT, since=since):
        query = urllib.parse.unquote_plus(str(e.get("query") or ""))
        if "/configmaps/fleet-rollout-" in e["path"] or "fleet.dev/record=rollout" in query:
            out.append(e)
    return out


def test_each_commit_reaches_both_replicas_clusters_with_one_writer_of_the_rollouts_and_a_watching_follower(
    fleet: rs.Fleet,
) -> None:
    a, b = fleet.start(), fleet.start()
    fleet.wait(lambda: fleet.settled([a, b]), within=60, what="2 replicas share every shard")
    first = str(fleet.repo.repo.head.target)
    fleet.wait(lambda: fleet.synced_at(first), within=90, what="every cluster Synced")
    fleet.wait(
        lambda: a.doc()["replica"]["coordinating"] != b.doc()["replica"]["coordinating"],
        within=30,
        what="one coordinator",
    )
    coordinator, follower = (a, b) if a.doc()["replica"]["coordinating"] else (b, a)
    journal = fleet.sim.journal_sync(rs.MANAGEMENT)
    since = journal[-1]["seq"] if journal else 0

    for i in range(COMMITS):
        colour = f"green-{i}"
        fleet.repo.bundle(
            BUNDLES[i % len(BUNDLES)], [configmap("settings", colour=colour)], namespace=BUNDLES[i % len(BUNDLES)],
            selector={}, rollout=ONE_WAVE,
        )  # fmt: skip
        sha = fleet.repo.commit(f"commit {i}: {colour}")
        took = fleet.wait(
            lambda sha=sha: fleet.synced_at(sha), within=90, what=f"every cluster Synced at {sha}"
        )
        print(f"commit {i}: every cluster of both replicas Synced in {took:.1f}s")

    requests = rollout_requests(fleet, since)
    writes = [e for e in requests if e["method"] in ("PUT", "DELETE")]
    assert writes, "the coordinator wrote no rollout record"
    writers = {rs.replica_of(e["userAgent"]) for e in writes}
    assert writers == {coordinator.id}, f"rollout records written by {writers}, not only {coordinator.id}"
    conflicts = [f"{e['method']} {e['path']}" for e in writes if e["status"] == 409]
    assert conflicts == [], f"the coordinator's rollout writes met conflicts: {conflicts}"
    reads = [e for e in requests if e["method"] == "GET" and rs.replica_of(e["userAgent"]) == follower.id]
    lists = [e for e in reads if "watch=true" not in str(e.get("query"))]
    watches = [  # a stream opened before the commits goes on through them
        e
        for e in rollout_requests(fleet, 0)
        if "watch=true" in str(e.get("query")) and rs.replica_of(e["userAgent"]) == follower.id
    ]
    assert watches, "the follower did not watch the rollout records"
    # Listing every period (1 s here) over the commits would be dozens; a watching follower lists again only
    # when its watch cannot go on, and once a minute as a check.
    assert len(lists) <= 3, f"the follower listed the rollout records {len(lists)} times"
