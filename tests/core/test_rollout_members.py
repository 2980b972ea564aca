"""The members' index of a rollout (fleet.core.rollout.members): what a round's observation and the advance
after it cost does not grow with the rollout's clusters, and the index never answers otherwise than the
members themselves would, whatever the order of events (hypothesis)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import model
from fleet.core import rollout as ro

SYNCED = model.State.SYNCED


def one_wave(n: int, *, concurrency: model.Count, soak: float = 0.0) -> ro.Rollout:
    names = [f"c{i:05d}" for i in range(n)]
    spec = model.RolloutSpec(
        waves=(model.WaveSpec(name="all", max_concurrency=concurrency, soak=soak),), progress_deadline=600.0
    )
    r = ro.start(
        bundle="web",
        revision="b" * 40,
        spec=spec,
        waves=[("all", tuple(names))],
        from_revisions=dict.fromkeys(names, "a" * 40),
        now=0.0,
    )
    return ro.advance(r, now=0.0).rollout


def python_calls(work: Callable[[], object]) -> int:
    """How many Python functions (lambdas and generator steps included) `work` runs."""
    calls = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize(
    "concurrency", [model.Count(100, percent=True), model.Count(25, percent=True)], ids=["100%", "25%"]
)
def test_a_rounds_observation_and_the_advance_after_it_do_the_same_work_for_ten_clusters_or_ten_thousand(
    concurrency: model.Count,
) -> None:
    def observe_and_advance(r: ro.Rollout) -> Callable[[], object]:
        in_flight = next(m.cluster for m in r.in_wave(0) if m.phase is ro.ClusterPhase.PROGRESSING)
        return lambda: ro.advance(ro.observe_round(r, in_flight, state=SYNCED, now=5.0), now=5.0)

    small, large = one_wave(12, concurrency=concurrency), one_wave(10_000, concurrency=concurrency)
    assert python_calls(observe_and_advance(large)) == python_calls(observe_and_advance(small))


def test_a_rollouts_members_do_not_change_in_place() -> None:
    r = one_wave(3, concurrency=model.Count(1))
    m = r.members["c00000"]
    for change in (
        lambda: r.members.__setitem__("c00000", m),
        lambda: r.members.pop("c00000"),
        lambda: r.members.update({}),
        lambda: r.members.clear(),
    ):
        with pytest.raises(TypeError, match="do not change"):
            change()
    assert r.members.put(replace(m, phase=ro.ClusterPhase.HEALTHY))["c00000"].phase is ro.ClusterPhase.HEALTHY
    assert r.members["c00000"] is m


def test_a_deadline_bound_left_by_a_healthy_cluster_is_tightened_by_the_advance_at_that_time() -> None:
    r = one_wave(2, concurrency=model.Count(1))  # c00000 in flight until 600
    r = ro.observe_round(r, "c00000", state=SYNCED, now=100.0)
    r = ro.advance(r, now=100.0).rollout  # c00001 in flight until 700
    assert ro.next_wake(r) in (600.0, 700.0)  # maybe the bound c00000 left: never later than 700
    step = ro.advance(r, now=600.0)
    assert step.rollout == r and step.start == ()  # nothing was due
    assert ro.next_wake(step.rollout) == 700.0


CLUSTERS = [f"c{i}" for i in range(6)]
EVENTS = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([1.0, 7.0, 31.0])),
    st.tuples(st.just("round"), st.sampled_from(CLUSTERS), st.sampled_from(list(model.State))),
    st.tuples(st.just("act"), st.sampled_from(list(ro.Action)), st.sampled_from([*CLUSTERS, None])),
    st.tuples(st.just("join"), st.sampled_from(["j1", "j2"])),
    st.tuples(st.just("leave"), st.sampled_from(CLUSTERS)),
)


def assert_index_true(r: ro.Rollout) -> None:
    """The index answers as the members do: counts, order, the next Pending, the deadline bound."""
    members = r.members
    fresh = ro.Members(dict(members))
    for wave in range(len(r.spec.waves)):
        for phase in ro.ClusterPhase:
            assert members.count(wave, phase) == fresh.count(wave, phase), (wave, phase)
        assert [m.cluster for m in members.in_wave(wave)] == sorted(
            m.cluster for m in members.values() if m.wave == wave
        )
        pending = [m for m in fresh.in_wave(wave) if m.phase is ro.ClusterPhase.PENDING]
        for limit in (1, 2, len(CLUSTERS) + 2):
            assert members.pending(wave, limit) == pending[:limit]
    deadlines = [
        m.deadline_at
        for m in members.values()
        if m.phase is ro.ClusterPhase.PROGRESSING and m.deadline_at is not None
    ]
    if deadlines:
        floor = members.deadline_floor
        assert floor is not None and floor <= min(deadlines)
    assert fresh.deadline_floor == (min(deadlines) if deadlines else None)


@settings(max_examples=300, deadline=None)
@given(
    waves=st.lists(
        st.tuples(st.integers(1, 3), st.integers(0, 1), st.sampled_from([0.0, 5.0])), min_size=1, max_size=3
    ),
    assignment=st.lists(st.integers(0, 2), min_size=len(CLUSTERS), max_size=len(CLUSTERS)),
    events=st.lists(EVENTS, max_size=50),
)
def test_the_members_index_decides_as_the_members_themselves_whatever_the_order_of_events(
    waves: list[tuple[int, int, float]], assignment: list[int], events: list[tuple[Any, ...]]
) -> None:
    spec = model.RolloutSpec(
        waves=tuple(
            model.WaveSpec(name=f"w{i}", max_concurrency=model.Count(c), max_failures=model.Count(f), soak=s)
            for i, (c, f, s) in enumerate(waves)
        ),
        progress_deadline=30.0,
    )
    per_wave: list[list[str]] = [[] for _ in waves]
    for cluster, index in zip(CLUSTERS, assignment, strict=True):
        per_wave[min(index, len(waves) - 1)].append(cluster)
    r = ro.start(
        bundle="b",
        revision="new",
        spec=spec,
        waves=[(w.name, tuple(cs)) for w, cs in zip(spec.waves, per_wave, strict=True)],
        from_revisions=dict.fromkeys(CLUSTERS, "old"),
        now=0.0,
    )
    now = 0.0
    for event in [("tick", 0.0), *events]:
        kind = event[0]
        if kind == "tick":
            now += event[1]
        elif kind == "round":
            r = ro.observe_round(r, event[1], state=event[2], message="seen", now=now)
        elif kind == "act":
            try:
                r = ro.act(r, event[1], actor="p", now=now, cluster=event[2])
            except ro.NotApplicable:
                pass
        elif kind == "join":
            r = ro.joined(r, event[1], from_revision=None, now=now)
        elif kind == "leave":
            r = ro.left(r, event[1], now=now)
        assert_index_true(r)
        # The same decisions as from members indexed afresh (no hint carried over).
        step = ro.advance(r, now=now)
        again = ro.advance(replace(r, members=ro.Members(dict(r.members))), now=now)
        assert (step.rollout, step.start) == (again.rollout, again.start)
        r = step.rollout
        assert_index_true(r)
        wake = ro.next_wake(r)
        exact = ro.next_wake(replace(r, members=ro.Members(dict(r.members))))
        assert (wake is None) == (exact is None) or (wake is not None and exact is None)
        if wake is not None and exact is not None:
            assert wake <= exact
