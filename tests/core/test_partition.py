"""`fleet.core.partition`: clusters split over `fleet sync --workers` processes, balanced by their work."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.core import model, partition, plan


def _target(bundle: str, objects: int, *, suspended: bool = False) -> plan.Target:
    objs = tuple({"kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}} for i in range(objects))
    desired = model.DesiredSet(bundle=bundle, cluster="c", objects=objs, hash="h")
    return plan.Target(bundle, desired=desired, suspended=suspended)


def test_a_clusters_work_is_its_reads_plus_one_per_object_it_applies() -> None:
    targets = {
        "web": _target("web", 100),
        "db": _target("db", 20),
        "off": _target("off", 50, suspended=True),
        "bad": plan.Target("bad", error="bundle bad: broken"),
    }
    assert partition.cluster_work(targets) == partition.BASE_WORK + 120
    assert partition.cluster_work({}) == partition.BASE_WORK
    assert partition.cluster_work(targets, paused=True) == 0


def test_the_split_puts_every_cluster_in_exactly_one_group_and_balances_the_work() -> None:
    work = {"a": 100, "b": 90, "c": 60, "d": 50, "e": 40, "f": 10}
    groups = partition.split(work, 3)
    assert len(groups) == 3
    assert sorted(n for g in groups for n in g) == sorted(work)
    loads = [sum(work[n] for n in g) for g in groups]
    assert loads == [110, 130, 110]  # a+f, b+e, c+d: heaviest first, each onto the least loaded group
    assert all(list(g) == sorted(g) for g in groups)


def test_the_split_is_the_same_whatever_order_the_clusters_come_in() -> None:
    names = [f"sim-{i:03d}" for i in range(50)]
    work = {n: (i * 37) % 11 * 10 + 5 for i, n in enumerate(names)}
    expected = partition.split(work, 4)
    shuffled = list(work.items())
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert partition.split(dict(shuffled), 4) == expected


def test_equal_clusters_are_split_evenly_by_name() -> None:
    work = {f"sim-{i:03d}": 105 for i in range(1, 8)}
    assert partition.split(work, 3) == (
        ("sim-001", "sim-004", "sim-007"),
        ("sim-002", "sim-005"),
        ("sim-003", "sim-006"),
    )


def test_fewer_clusters_than_workers_gives_one_group_per_cluster_and_none_gives_no_group() -> None:
    assert partition.split({"b": 1, "a": 1}, 8) == (("a",), ("b",))
    assert partition.split({"b": 0, "a": 0, "c": 0}, 2) == (("a", "c"), ("b",))
    assert partition.split({}, 3) == ()
    assert partition.split({"a": 7}, 1) == (("a",),)


def test_a_split_into_less_than_one_group_or_of_negative_work_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition.split({"a": 1}, 0)
    with pytest.raises(ValueError, match="negative"):
        partition.split({"a": -1}, 2)


@given(
    st.dictionaries(st.text("abcdefgh-", min_size=1, max_size=6), st.integers(0, 10_000), max_size=60),
    st.integers(1, 8),
)
def test_no_group_carries_more_than_the_lightest_plus_one_clusters_work(work: dict[str, int], n: int) -> None:
    groups = partition.split(work, n)
    assert sorted(x for g in groups for x in g) == sorted(work)
    assert len(groups) == min(n, len(work))
    if groups:
        loads = [sum(work[x] for x in g) for g in groups]
        heaviest = max(work.values())
        assert max(loads) - min(loads) <= heaviest
