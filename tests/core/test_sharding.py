"""Virtual shards and their assignment to replicas (fleet.core.sharding)."""

from __future__ import annotations

import collections
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import sharding

# Pinned: a cluster's shard is part of the contract between replicas of different versions.
KNOWN = [
    ("sim-001", 32, 3),
    ("prod-eu-1", 32, 11),
    ("dev", 32, 15),
    ("ünïcode", 32, 18),
    ("sim-001", 4096, 1539),
    ("prod-eu-1", 4096, 1163),
]

names_st = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@pytest.mark.parametrize(("cluster", "shards", "shard"), KNOWN)
def test_the_shard_of_a_cluster_never_changes_across_versions(cluster: str, shards: int, shard: int) -> None:
    assert sharding.shard_of(cluster, shards=shards) == shard


def test_clusters_spread_evenly_over_the_shards() -> None:
    counts = collections.Counter(sharding.shard_of(f"cluster-{i:04d}", shards=32) for i in range(3200))
    assert set(counts) == set(range(32))
    assert min(counts.values()) > 60 and max(counts.values()) < 140  # 100 expected each


@pytest.mark.parametrize("bad", [0, -1, 4097, 2.5, True, "32"])
def test_a_shard_count_outside_1_to_4096_is_refused_saying_so(bad: object) -> None:
    with pytest.raises(ValueError, match="number of shards must be a whole number from 1 to 4096"):
        sharding.shard_of("a", shards=bad)  # type: ignore[arg-type]


def test_a_load_factor_below_1_is_refused() -> None:
    with pytest.raises(ValueError, match="load factor must be a number from 1 to 4"):
        sharding.assign(shards=32, live=["a"], held={}, load_factor=0.9)


def test_no_live_replica_assigns_nothing() -> None:
    assert sharding.assign(shards=32, live=[], held={0: "gone"}).owner == {}


def test_one_replica_owns_every_shard() -> None:
    a = sharding.assign(shards=32, live=["only"], held={})
    assert a.of("only") == frozenset(range(32))


@pytest.mark.slow  # seconds of CPU: generated memberships
@settings(max_examples=100, deadline=None)
@given(
    shards=st.integers(min_value=1, max_value=300),
    live=st.sets(names_st, min_size=1, max_size=12),
    held=st.dictionaries(st.integers(min_value=0, max_value=299), names_st, max_size=40),
    factor=st.sampled_from([1.0, 1.1, 1.25, 2.0]),
)
def test_every_shard_has_one_live_owner_and_loads_stay_within_floor_and_cap(
    shards: int, live: set[str], held: dict[int, str], factor: float
) -> None:
    a = sharding.assign(shards=shards, live=live, held=held, load_factor=factor)
    assert set(a.owner) == set(range(shards))
    assert set(a.owner.values()) <= live
    loads = a.loads()
    least = shards // len(live)
    most = math.ceil(factor * shards / len(live))
    assert all(least <= loads.get(r, 0) <= most for r in live), loads
    # The same inputs in another order give the same answer.
    again = sharding.assign(shards=shards, live=sorted(live, reverse=True), held=dict(reversed(held.items())))
    assert again.owner == sharding.assign(shards=shards, live=live, held=held).owner


@settings(max_examples=100, deadline=None)
@given(shards=st.integers(min_value=1, max_value=300), live=st.sets(names_st, min_size=1, max_size=12))
def test_an_assignment_held_as_assigned_stays_as_it_is(shards: int, live: set[str]) -> None:
    first = sharding.assign(shards=shards, live=live, held={})
    assert sharding.assign(shards=shards, live=live, held=first.owner).owner == first.owner


def _realise(owner: dict[int, str], live: set[str]) -> dict[int, str]:
    """Replicas act on an assignment: holders outside `live` are gone."""
    return {s: r for s, r in owner.items() if r in live}


@settings(max_examples=150, deadline=None)
@given(names=st.lists(names_st, min_size=3, max_size=3, unique=True))
def test_scaling_1_to_3_to_2_moves_at_most_the_needed_share_plus_10_percent(names: list[str]) -> None:
    one = sharding.assign(shards=32, live=names[:1], held={}).owner
    three = sharding.assign(shards=32, live=names, held=one).owner
    # 1 -> 3: the two new replicas need 2/3 of the shards; nothing else moves.
    assert sharding.moved(one, three) <= (2 / 3 + 0.10) * 32
    left = set(names) - {names[1]}
    two = sharding.assign(shards=32, live=left, held=_realise(three, left)).owner
    # 3 -> 2: the leaving replica's third (1/N of the larger count) moves, nothing else.
    assert sharding.moved(three, two) <= (1 / 3 + 0.10) * 32


@pytest.mark.slow  # seconds of CPU: generated memberships
@settings(max_examples=150, deadline=None)
@given(
    shards=st.sampled_from([8, 32, 64, 256]),
    names=st.lists(names_st, min_size=8, max_size=8, unique=True),
    steps=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=7)), min_size=1, max_size=8),
)
def test_each_join_or_leave_moves_about_1_over_n_of_the_shards(
    shards: int, names: list[str], steps: list[tuple[bool, int]]
) -> None:
    live = {names[0]}
    owner = sharding.assign(shards=shards, live=live, held={}).owner
    for join, i in steps:
        before = set(live)
        if join:
            live.add(names[i])
        elif len(live) > 1:
            live.discard(names[i])
        if live == before:
            continue
        new = sharding.assign(shards=shards, live=live, held=_realise(owner, live)).owner
        n = max(len(before), len(live))
        # 1/N of the larger count, 10 % more, and one shard for rounding.
        assert sharding.moved(owner, new) <= shards / n + 0.10 * shards + 1
        owner = new
