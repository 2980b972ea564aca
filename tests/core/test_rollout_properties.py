"""Properties of the rollout state machine under random event orders (hypothesis).

Whatever the order of applies, health reports, deadlines, people's actions, joins and leaves: a cluster
is never started while an earlier wave is unfinished, never more than `maxConcurrency` are started into
flight, nothing starts while the rollout is halted or has ended, and no cluster is sent the revision twice
unless a person resumed it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import model
from fleet.core import rollout as ro

CLUSTERS = [f"c{i}" for i in range(7)]

waves_st = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3),  # maxConcurrency
        st.integers(min_value=0, max_value=1),  # maxFailures
        st.sampled_from([0.0, 5.0]),  # soak
        st.sampled_from(["none", "before", "after"]),
    ),
    min_size=1,
    max_size=3,
)

event_st = st.one_of(
    st.tuples(st.just("tick"), st.floats(min_value=0.1, max_value=20)),
    st.tuples(
        st.just("applied"), st.sampled_from(CLUSTERS), st.sampled_from(["ok", "refused", "unreachable"])
    ),
    st.tuples(
        st.just("health"), st.sampled_from(CLUSTERS), st.sampled_from(list(ro.Verdict)), st.floats(-5, 5)
    ),
    st.tuples(st.just("act"), st.sampled_from(list(ro.Action)), st.sampled_from([*CLUSTERS, None])),
    st.tuples(st.just("join"), st.sampled_from(["j1", "j2"])),
    st.tuples(st.just("leave"), st.sampled_from(CLUSTERS)),
)


@settings(max_examples=300, deadline=None)
@given(
    waves=waves_st,
    assignment=st.lists(
        st.integers(min_value=0, max_value=2), min_size=len(CLUSTERS), max_size=len(CLUSTERS)
    ),
    events=st.lists(event_st, max_size=60),
    on_failure=st.sampled_from(["halt", "rollback"]),
)
def test_random_event_orders_keep_the_rollout_invariants(
    waves: list[tuple[int, int, float, str]], assignment: list[int], events: list[tuple], on_failure: str
) -> None:
    spec = model.RolloutSpec(
        waves=tuple(
            model.WaveSpec(
                name=f"w{i}",
                max_concurrency=model.Count(c),
                max_failures=model.Count(f),
                soak=s,
                approval=model.Approval(a),
            )
            for i, (c, f, s, a) in enumerate(waves)
        ),
        progress_deadline=30.0,
        on_failure=model.OnFailure(on_failure),
    )
    members = [[] for _ in waves]
    for cluster, index in zip(CLUSTERS, assignment, strict=True):
        members[min(index, len(waves) - 1)].append(cluster)
    r = ro.start(
        bundle="b",
        revision="new",
        spec=spec,
        waves=[(w.name, tuple(m)) for w, m in zip(spec.waves, members, strict=True)],
        from_revisions=dict.fromkeys(CLUSTERS, "old"),
        now=0.0,
    )
    now = 0.0
    sent: dict[str, int] = {}  # cluster -> times it was started
    resumed: set[str] = set()

    def step(r: ro.Rollout) -> ro.Rollout:
        before = r
        result = ro.advance(r, now=now)
        after = result.rollout
        if result.start:
            assert before.phase is not ro.Phase.HALTED and not before.terminal, (
                "started past a halt or an end"
            )
            for cluster in result.start:
                m = after.members[cluster]
                assert m.wave == after.wave, "started outside the current wave"
                assert before.members[cluster].phase is ro.ClusterPhase.PENDING
                sent[cluster] = sent.get(cluster, 0) + 1
                assert sent[cluster] == 1 or cluster in resumed, f"{cluster} started twice"
            wave = after.spec.waves[after.wave]
            size = len([m for m in after.in_wave(after.wave) if m.phase is not ro.ClusterPhase.REMOVED])
            in_flight = [m for m in after.in_wave(after.wave) if m.phase is ro.ClusterPhase.PROGRESSING]
            # Starts happen only below the limit, so after them the wave's flight is within it (a healthy
            # cluster falling back during a soak is no start, and then nothing starts).
            assert len(in_flight) <= wave.max_concurrency.of(size, at_least_one=True)
        for m in after.members.values():
            if m.wave > after.wave:
                assert not m.moved or m.phase in (ro.ClusterPhase.DONE,), f"{m.cluster} of a later wave moved"
        if before.terminal:
            assert after == before, "an ended rollout changed"
        if before.phase is ro.Phase.HALTED:
            assert after.wave == before.wave, "a halted rollout moved on to another wave"
        return after

    r = step(r)
    for event in events:
        kind = event[0]
        was_halted = r.phase is ro.Phase.HALTED
        if kind == "tick":
            now += event[1]
        elif kind == "applied":
            _, cluster, how = event
            r = ro.applied(r, cluster, now=now, ok=how == "ok", unreachable=how == "unreachable", message=how)
        elif kind == "health":
            _, cluster, verdict, skew = event
            r = ro.health(r, cluster, now=now, verdict=verdict, observed_at=now + min(skew, 0.0))
        elif kind == "act":
            _, action, cluster = event
            try:
                r = ro.act(r, action, actor="p", now=now, cluster=cluster)
            except ro.NotApplicable:
                pass
            else:
                if action is ro.Action.RESUME:
                    resumed.update(
                        m.cluster for m in r.members.values() if m.phase is ro.ClusterPhase.PENDING
                    )
        elif kind == "join":
            r = ro.joined(r, event[1], from_revision=None, now=now)
        elif kind == "leave":
            r = ro.left(r, event[1], now=now)
        if was_halted and r.phase is not ro.Phase.HALTED:
            assert kind == "act", "a halt was lifted by something other than a person"
        r = step(r)
        assert ro.load(ro.dump(r)) == r
