"""A follower's rounds and the looks after them (fleet.controller.rollouts, `in_flight`, `awaiting_health`),
in-process over real HTTP against `fleet sim` as the management cluster: a follower waits no more for a
cluster's health than the coordinator waits for its own clusters'."""

from __future__ import annotations

from pathlib import Path

import anyio

from fleet.controller import rollouts
from fleet.core import model, sharding
from fleet.core import rollout as ro
from fleet.sim import testing
from tests.support import placement_builders as pb
from tests.support.inprocess import REV, SHARDS, SYNCED, Owner, Replica, close, management_sim, replica

__all__ = ["management_sim"]  # the fixture `sim`

MINE = [f"c{i}" for i in range(200) if sharding.shard_of(f"c{i}", shards=SHARDS) == 0][:2]
THEIRS = [f"c{i}" for i in range(200) if sharding.shard_of(f"c{i}", shards=SHARDS) == 1][:3]


async def start(r: Replica, *, soak: float = 0.0) -> None:
    every = MINE + THEIRS
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=model.Count(100, percent=True), soak=soak),),
        progress_deadline=600.0,
    )
    web = model.Bundle(**{**pb.bundle("web").__dict__, "rollout": spec})
    await r.conductor.begin(
        revision=REV, author="ana", repo=pb.repo([pb.cluster(c) for c in every], [web], revision=REV),
        placed={"web": {c: f"h-{c}" for c in every}},
        waves={"web": ro.Membership(waves=(("all", tuple(every)),), errors={})},
        held=lambda c, b: (None, None), paused=(), context=None,
    )  # fmt: skip


def run_pair(sim: testing.SimHandle, tmp_path: Path, *, soak: float, check: object) -> None:
    async def main() -> None:
        a = await replica(sim, tmp_path, Owner("a", frozenset({0, 2}), coordinator=True))
        b = await replica(sim, tmp_path, Owner("b", frozenset({1, 3}), coordinator=False))
        try:
            await start(a, soak=soak)
            await start(b, soak=soak)
            await b.shared.step()  # takes the coordinator's rollout in
            assert b.conductor.hold("web", THEIRS[0]) == rollouts.NEWEST
            await check(a, b)  # type: ignore[operator]
        finally:
            await close(a, b)

    anyio.run(main)


def test_a_followers_cluster_it_saw_healthy_is_not_in_flight_so_its_own_apply_coming_back_wakes_no_second_round(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def check(a: Replica, b: Replica) -> None:
        c, other = THEIRS[0], THEIRS[1]
        assert b.conductor.in_flight(c)  # in flight before its round: a change on it is looked at
        await b.conductor.observed(c, SYNCED, holds={"web": rollouts.NEWEST})
        # The coordinator's copy still has it in flight until the shard's summary reaches it...
        assert b.conductor.latest["web"].members[c].phase is ro.ClusterPhase.PROGRESSING
        # ... but the follower saw it healthy: no look (a whole round, before) when its apply comes back.
        assert not b.conductor.in_flight(c)
        assert b.conductor.awaiting_health(c) == []
        assert b.conductor.in_flight(other)  # a cluster it has not seen healthy yet still is
        # Seen progressing (not healthy yet): still in flight, looked at when it changes.
        progressing = {"web": rollouts.Observed(state=model.State.PROGRESSING)}
        await b.conductor.observed(other, progressing, holds={"web": rollouts.NEWEST})
        assert b.conductor.in_flight(other)
        # The coordinator itself: its own round makes its cluster healthy in its rollout at once.
        await a.conductor.observed(MINE[0], SYNCED, holds={"web": rollouts.NEWEST})
        assert not a.conductor.in_flight(MINE[0])

    run_pair(sim, tmp_path, soak=0.0, check=check)


def test_a_followers_cluster_it_saw_healthy_in_a_wave_that_soaks_is_still_looked_at_when_it_changes(
    sim: testing.SimHandle, tmp_path: Path
) -> None:
    async def check(a: Replica, b: Replica) -> None:
        c = THEIRS[0]
        await b.conductor.observed(c, SYNCED, holds={"web": rollouts.NEWEST})
        assert b.conductor.in_flight(c)  # a soak restarts when it degrades: as the coordinator's own
        assert b.conductor.awaiting_health(c) == ["web"]  # a look at its health, not a whole round
        await a.conductor.observed(MINE[0], SYNCED, holds={"web": rollouts.NEWEST})
        assert a.conductor.in_flight(MINE[0]) and a.conductor.awaiting_health(MINE[0]) == ["web"]

    run_pair(sim, tmp_path, soak=60.0, check=check)
