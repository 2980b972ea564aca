"""Replicas under schedules of kills, pauses, partitions and clock skew (hypothesis), on a fake clock.

Each replica runs the real decision loop of `fleet.core.coordination` against an in-memory lease store
with optimistic concurrency (tests/support/leaseworld.py); requests take time and are lost in partitions;
clocks have arbitrary offsets and run up to 1 % fast or slow. Asserted:

* at every moment each shard (and the coordinator lease) has at most one replica allowed to write;
* a shard whose owner is killed is owned again within the lease duration plus a retry period;
* a replica told to stop (SIGTERM) hands its shards over within a retry period;
* a holder cut off, paused, or deaf to the answers of its releases never overlaps the next owner;
* after the faults end, every shard is owned by a live replica;
* replicas started together take their shards without handing any over;
* scaling 1 -> 3 -> 2 moves at most the needed share of the shards plus 10 %.

Each safety test was seen failing on a broken variant of the rules (a lease taken a few seconds early,
a deadline a few seconds late, updates without compare-and-swap, a release that keeps writing until its
answer, shards renewed without the replica lease).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import leases, sharding
from tests.support.leaseworld import Fault, World

T = leases.Timings()
NAMES = ["r0", "r1", "r2", "r3", "r4", "r5"]

clock_st = st.tuples(
    st.floats(min_value=-3600, max_value=3600),  # offset
    st.floats(min_value=0.99, max_value=1.01),  # rate
)
fault_st = st.builds(
    Fault,
    at=st.floats(min_value=0, max_value=100),
    kind=st.sampled_from(["kill", "term", "pause", "partition", "deaf", "deaf-releases", "start"]),
    replica=st.sampled_from(NAMES),
    length=st.floats(min_value=0.5, max_value=40),
)


def _world(seed: int, *, max_latency: float, shards: int = 8) -> World:
    rnd = random.Random(seed)
    return World(shards=shards, latency=lambda _n: rnd.uniform(0, max_latency))


@pytest.mark.slow  # seconds of CPU: generated schedules of replicas
@settings(max_examples=40, deadline=None)
@given(
    initial=st.integers(min_value=1, max_value=4),
    clocks=st.lists(clock_st, min_size=6, max_size=6),
    faults=st.lists(fault_st, max_size=10),
    seed=st.integers(min_value=0, max_value=2**32),
    max_latency=st.sampled_from([0.0, 0.05, 0.2, 0.45]),  # each way; answers time out after 1 s
)
def test_at_every_moment_each_shard_has_at_most_one_replica_allowed_to_write(
    initial: int,
    clocks: list[tuple[float, float]],
    faults: list[Fault],
    seed: int,
    max_latency: float,
) -> None:
    world = _world(seed, max_latency=max_latency)
    for i in range(initial):
        world.add(NAMES[i], at=i * 0.3, offset=clocks[i][0], rate=clocks[i][1])
    for f in faults:
        if f.kind == "start":  # joiners get their clock too
            i = NAMES.index(f.replica)
            world.at(
                f.at,
                lambda i=i, at=f.at: (
                    world.replicas.get(NAMES[i])
                    or world.add(NAMES[i], at=at, offset=clocks[i][0], rate=clocks[i][1])
                ),
            )
    world.schedule(f for f in faults if f.kind != "start")
    world.run(200.0)
    world.finish()
    assert world.overlaps() == []
    # Epochs only grow, one per new holder.
    for name, changes in world.store.holders.items():
        epochs = [t for _, who, t in changes if who]
        assert epochs == sorted(set(epochs)), (name, changes)
    # The faults ended by 140 s; 60 s later every shard is owned by a replica that is alive.
    alive = {r.name for r in world.replicas.values() if r.alive}
    if alive:
        owners = world.owners()
        assert set(owners) == set(range(world.shards)), owners
        assert set(owners.values()) <= alive


@pytest.mark.slow  # seconds of CPU: generated schedules of replicas
@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=4),
    clocks=st.lists(clock_st, min_size=4, max_size=4),
    victim=st.integers(min_value=0, max_value=3),
    kind=st.sampled_from(["partition", "deaf", "deaf-releases", "pause"]),
    at=st.floats(min_value=20, max_value=24),
    length=st.floats(min_value=8, max_value=40),
    seed=st.integers(min_value=0, max_value=2**32),
    max_latency=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_a_holder_cut_off_or_paused_stops_writing_before_anyone_else_may_take_its_shards(
    count: int,
    clocks: list[tuple[float, float]],
    victim: int,
    kind: str,
    at: float,
    length: float,
    seed: int,
    max_latency: float,
) -> None:
    world = _world(seed, max_latency=max_latency)
    for i in range(count):
        world.add(NAMES[i], at=i * 0.7, offset=clocks[i][0], rate=clocks[i][1])
    name = NAMES[victim % count]
    world.schedule([Fault(at=at, kind=kind, replica=name, length=length)])
    world.run(at + length + 40.0)
    world.finish()
    assert world.overlaps() == []
    if kind in ("partition", "pause") and length > T.duration + T.retry:
        # Its shards were taken meanwhile, and it never wrote under them after its deadline.
        victim_windows = [
            w for ws in world.windows.values() for w in ws if w.replica == name and w.end > at + T.duration
        ]
        assert all(w.start >= at + length for w in victim_windows), victim_windows
    assert set(world.owners()) == set(range(world.shards))


@settings(max_examples=30, deadline=None)
@given(
    lead=st.floats(min_value=0.0, max_value=3.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_replica_that_loses_the_answers_to_its_releases_writes_nothing_after_sending_them(
    lead: float, seed: int
) -> None:
    world = _world(seed, max_latency=0.05)
    world.add("a")
    world.add("b", at=0.7)
    world.run(30.0)
    # a hears no answer to its releases while c joins and a hands shards over to it.
    world.schedule([Fault(at=30.0 - lead, kind="deaf-releases", replica="a", length=12.0)])
    world.add("c", at=30.0)
    world.run(80.0)
    world.finish()
    assert world.overlaps() == []
    assert "c" in world.owners().values()


@pytest.mark.slow  # seconds of CPU: generated schedules of replicas
@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=4),
    clocks=st.lists(
        st.tuples(st.floats(min_value=-3600, max_value=3600), st.floats(min_value=0.995, max_value=1.005)),
        min_size=4,
        max_size=4,
    ),
    victims=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=3, unique=True),
    when=st.floats(min_value=0, max_value=2),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_shard_whose_owner_is_killed_is_owned_again_within_the_lease_duration_plus_a_retry(
    count: int, clocks: list[tuple[float, float]], victims: list[int], when: float, seed: int
) -> None:
    world = _world(seed, max_latency=0.02)
    for i in range(count):
        world.add(NAMES[i], at=i * 0.7, offset=clocks[i][0], rate=clocks[i][1])
    victims = [v for v in victims if v < count][: count - 1]  # someone survives
    kills = [(30.0 + 25.0 * k + when, NAMES[v]) for k, v in enumerate(victims)]
    world.schedule(Fault(at=at, kind="kill", replica=name) for at, name in kills)
    world.run(30.0 + 25.0 * len(kills) + 30.0)
    # The longest wait: seen up to a retry after the last renewal, then a duration on a clock 0.5 % slow,
    # plus a few request latencies.
    bound = T.duration + T.retry + (T.duration + T.retry) * 0.006 + 0.2
    for at, name in kills:
        for shard in range(world.shards):
            lease = world.shard_lease(shard)
            if world.holder_at(lease, at) == name:
                again = world.taken_after(lease, at, other_than=name)
                assert again - at <= bound, (lease, at, again)
    assert world.overlaps() == []


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=4),
    victim=st.integers(min_value=0, max_value=3),
    when=st.floats(min_value=0, max_value=2),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_replica_told_to_stop_hands_its_shards_over_within_a_retry_period(
    count: int, victim: int, when: float, seed: int
) -> None:
    world = _world(seed, max_latency=0.02)
    for i in range(count):
        world.add(NAMES[i], at=i * 0.7)
    name = NAMES[victim % count]
    at = 30.0 + when
    world.schedule([Fault(at=at, kind="term", replica=name)])
    world.run(60.0)
    held = [s for s in range(world.shards) if world.holder_at(world.shard_lease(s), at) == name]
    assert held
    for shard in held:
        again = world.taken_after(world.shard_lease(shard), at, other_than=name)
        assert again - at <= T.retry + 0.5, (shard, again - at)
    assert not world.replicas[name].alive
    assert set(world.owners().values()) <= set(NAMES[:count]) - {name}
    assert world.overlaps() == []


@settings(max_examples=30, deadline=None)
@given(
    starts=st.lists(st.floats(min_value=0, max_value=1.5), min_size=2, max_size=4),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_replicas_started_together_take_their_shards_without_handing_any_over(
    starts: list[float], seed: int
) -> None:
    world = _world(seed, max_latency=0.02, shards=16)
    for i, at in enumerate(starts):
        world.add(NAMES[i], at=at)
    world.run(20.0)
    assert len(world.owners()) == 16 and set(world.owners().values()) == set(NAMES[: len(starts)])
    # Each shard changed hands once: from nobody to its owner.
    assert all(len(world.store.holders[world.shard_lease(s)]) == 1 for s in range(16)), world.store.holders


def _touched(world: World, start: float, end: float) -> int:
    """Shards whose holder changed at any moment in (start, end]."""
    return sum(
        1
        for s in range(world.shards)
        if any(start < at <= end for at, _, _ in world.store.holders.get(world.shard_lease(s), []))
    )


@pytest.mark.slow  # seconds of CPU: generated schedules of replicas
@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
        min_size=3,
        max_size=3,
        unique=True,
    ),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_scaling_1_to_3_to_2_moves_at_most_the_needed_share_of_the_shards_plus_10_percent(
    names: list[str], seed: int
) -> None:
    world = _world(seed, max_latency=0.02, shards=32)
    world.add(names[0])
    world.run(20.0)
    assert set(world.owners().values()) == {names[0]} and len(world.owners()) == 32
    world.add(names[1], at=20.0)
    world.add(names[2], at=20.0)
    world.run(60.0)
    loads = sharding.Assignment(shards=32, owner=world.owners()).loads()
    assert sorted(loads) == sorted(names) and all(10 <= n <= 14 for n in loads.values()), loads
    # 1 -> 3: the two new replicas need 2/3 of the shards.
    assert _touched(world, 20.0, 60.0) <= (2 / 3 + 0.10) * 32
    world.schedule([Fault(at=60.0, kind="term", replica=names[1])])
    world.run(100.0)
    assert set(world.owners().values()) == {names[0], names[2]} and len(world.owners()) == 32
    # 3 -> 2: the leaving replica's share, 1/3.
    assert _touched(world, 60.0, 100.0) <= (1 / 3 + 0.10) * 32
    assert world.overlaps() == []
