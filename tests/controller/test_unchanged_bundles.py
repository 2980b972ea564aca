"""A commit that changes one bundle and leaves the others as they are, with replicas on a management cluster
(fleet.controller.rollouts; docs/scaling.md, "A commit that leaves a bundle as it is"), in-process over real
HTTP against `fleet sim`: the coordinator rewrites no rollout record of a bundle the commit leaves as it is
(at 1,000 clusters each is about 310 KiB, nine of them per commit), and the follower still applies such a
bundle only where the coordinator's rollout sends a cluster the very objects the commit renders there; a
changed bundle, a cluster the rollout has no hash of, only once the coordinator has taken the commit in."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.controller import rollouts
from fleet.core import model, sharding
from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support import placement_builders as pb
from tests.support.inprocess import (
    SHARDS,
    Owner,
    Replica,
    close,
    last_seq,
    management_sim,
    replica,
    two_clusters_on_two_shards,
)

__all__ = ["management_sim"]  # the fixture `sim`

R1, R2, R3 = "1" * 40, "2" * 40, "3" * 40
BUNDLES = ("api", "web", "db")


def one_wave(name: str) -> model.Bundle:
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True)),),
        progress_deadline=600.0,
    )
    return model.Bundle(**{**pb.bundle(name).__dict__, "rollout": spec})


async def commit(r: Replica, revision: str, placed: dict[str, dict[str, str]]) -> None:
    """`revision` taken in by a replica's Conductor as the engine hands it (every bundle, one wave)."""
    clusters = sorted({c for per in placed.values() for c in per})
    await r.conductor.begin(
        revision=revision,
        author="ana",
        repo=pb.repo([pb.cluster(c) for c in clusters], [one_wave(b) for b in placed], revision=revision),
        placed=placed,
        waves={
            b: ro.Membership(waves=(("all", tuple(sorted(per))),), errors={}) for b, per in placed.items()
        },
        held=lambda c, b: (None, None),
        paused=(),
        context=None,
    )


def record_writes(sim: testing.SimHandle, since: int, bundle: str) -> list[tuple[str, int]]:
    """(method, status) of every rewrite of a rollout record of `bundle` the management cluster journaled
    after `since` (a rewrite goes to the record's own path; a create to the collection)."""
    return [
        (e["method"], e["status"])
        for e in sim.journal_sync("mgmt", since=since)
        if e["method"] in ("PUT", "PATCH") and f"/configmaps/fleet-rollout-{bundle}-" in e["path"]
    ]


def placed_at(c1: str, c2: str, *, web: str) -> dict[str, dict[str, str]]:
    """What a revision renders: `web` changes with it, api and db never do."""
    return {
        "api": {c1: "api1", c2: "api2"},
        "web": {c1: f"{web}1", c2: f"{web}2"},
        "db": {c1: "db1", c2: "db2"},
    }


def test_a_commit_that_leaves_bundles_as_they_are_rewrites_none_of_their_rollout_records(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        try:
            await commit(a, R1, placed_at(c1, c2, web="x"))
            for rev, web in ((R2, "y"), (R3, "z")):
                since = last_seq(sim)
                await commit(a, rev, placed_at(c1, c2, web=web))
                await a.conductor.flush()
                assert a.conductor.latest["web"].revision == rev  # the changed bundle: a new rollout
                for b in ("api", "db"):
                    assert a.conductor.latest[b].revision == R1  # left as it is: the rollout stays
                    assert record_writes(sim, since, b) == [], f"{b}'s record rewritten at {rev[:4]}"
                assert a.conductor.hold("api", c2) == rollouts.NEWEST
        finally:
            await close(a)

    anyio.run(main)


def test_a_follower_applies_a_bundle_a_commit_leaves_as_it_is_at_once_and_a_changed_one_once_the_coordinator_took_it_in(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await commit(a, R1, placed_at(c1, c2, web="x"))
            await commit(b, R1, placed_at(c1, c2, web="x"))
            await b.shared.step()
            assert {x: b.conductor.hold(x, c2) for x in BUNDLES} == dict.fromkeys(BUNDLES, rollouts.NEWEST)
            # The follower has the next commit first: what it renders of api and db on c2 is what the
            # coordinator's rollouts send c2 already (the records' hashes), web is not.
            await commit(b, R2, placed_at(c1, c2, web="y"))
            assert b.conductor.hold("api", c2, revision=R2) == rollouts.NEWEST
            assert b.conductor.hold("db", c2, revision=R2) == rollouts.NEWEST
            assert b.conductor.hold("web", c2, revision=R2) == rollouts.LEAVE  # not on its own word
            b.woken.clear()
            await commit(a, R2, placed_at(c1, c2, web="y"))
            await b.shared.step()
            assert b.conductor.latest["web"].revision == R2
            assert b.conductor.hold("web", c2, revision=R2) == rollouts.NEWEST
            assert sorted(b.woken) == sorted([c1, c2])  # web's hold changed; api's and db's did not
            assert {x: b.conductor.latest[x].revision for x in ("api", "db")} == {"api": R1, "db": R1}
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_cluster_a_commit_places_without_changing_the_bundle_is_written_into_its_rollout_before_the_follower_applies_it(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()
    c3 = next(f"c{i}" for i in range(100, 200) if sharding.shard_of(f"c{i}", shards=SHARDS) == 1)

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await commit(a, R1, placed_at(c1, c2, web="x"))
            await b.shared.step()
            more = placed_at(c1, c2, web="x")
            more["api"][c3] = "api3"  # c3 joins api, which renders as before on c1 and c2
            await commit(b, R2, more)
            assert b.conductor.hold("api", c2, revision=R2) == rollouts.NEWEST
            # Of c3 the rollout says nothing yet: it waits for the coordinator.
            assert b.conductor.hold("api", c3, revision=R2) == rollouts.LEAVE
            since = last_seq(sim)
            await commit(a, R2, more)
            assert record_writes(sim, since, "api") == [("PUT", 200)]  # c3 and its hash: written at once
            assert record_writes(sim, since, "web") == record_writes(sim, since, "db") == []
            await b.shared.step()
            assert c3 in b.conductor.hashes["api"]
            assert b.conductor.hold("api", c3, revision=R2) == rollouts.NEWEST
            assert c3 in b.woken
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_new_coordinator_takes_in_a_commit_that_leaves_bundles_as_they_are_without_rewriting_their_records(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    c1, c2 = two_clusters_on_two_shards()

    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await commit(a, R1, placed_at(c1, c2, web="x"))
            await commit(b, R1, placed_at(c1, c2, web="x"))
            await b.shared.step()
        finally:
            await close(a)
        try:
            # a is gone; b takes the coordinator lease over and then the next commit.
            b.shared.owner = Owner("b", frozenset({0, 1, 2, 3}), coordinator=True)
            await b.shared.step()
            assert b.conductor.deciding()
            since = last_seq(sim)
            await commit(b, R2, placed_at(c1, c2, web="y"))
            assert b.conductor.latest["web"].revision == R2
            assert record_writes(sim, since, "api") == record_writes(sim, since, "db") == []
            assert b.conductor.hold("api", c1) == rollouts.NEWEST
            # A replica started afresh follows it, and applies the bundles left as they are at once.
            c = await replica(sim, tmp_path, Owner("c", frozenset({2}), coordinator=False))
            try:
                await commit(c, R3, placed_at(c1, c2, web="y"))
                assert c.conductor.hold("api", c1, revision=R3) == rollouts.NEWEST
                assert c.conductor.hold("web", c1, revision=R3) == rollouts.NEWEST  # R3 renders R2's web
            finally:
                await close(c)
        finally:
            await close(b)

    anyio.run(main)
