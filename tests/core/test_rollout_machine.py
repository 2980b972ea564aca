"""The rollout state machine (fleet.core.rollout), driven by hand: pure values, explicit times, no server."""

from __future__ import annotations

import pytest

from fleet.core import model
from fleet.core import rollout as ro

H = ro.Verdict.HEALTHY


def wave(
    name: str, *, conc: str | int = 1, fails: int = 0, soak: float = 0, approval: str = "none"
) -> model.WaveSpec:
    c = model.Count(int(conc[:-1]), percent=True) if isinstance(conc, str) else model.Count(conc)
    return model.WaveSpec(
        name=name,
        max_concurrency=c,
        max_failures=model.Count(fails),
        soak=soak,
        approval=model.Approval(approval),
    )


def begin(
    waves: list[tuple[model.WaveSpec, list[str]]],
    *,
    deadline: float = 600,
    on_failure: str = "halt",
    unchanged: tuple[str, ...] = (),
) -> ro.Rollout:
    spec = model.RolloutSpec(
        waves=tuple(w for w, _ in waves), progress_deadline=deadline, on_failure=model.OnFailure(on_failure)
    )
    clusters = [c for _, cs in waves for c in cs]
    return ro.start(
        bundle="web",
        revision="b" * 40,
        spec=spec,
        waves=[(w.name, tuple(cs)) for w, cs in waves],
        from_revisions=dict.fromkeys(clusters, "a" * 40),
        unchanged=unchanged,
        now=0.0,
    )


def healthy(r: ro.Rollout, cluster: str, at: float) -> ro.Rollout:
    r = ro.applied(r, cluster, now=at, ok=True)
    return ro.health(r, cluster, now=at, verdict=H, observed_at=at)


def phases(r: ro.Rollout) -> dict[str, str]:
    return {name: str(m.phase) for name, m in sorted(r.members.items())}


def test_the_default_rollout_keeps_a_quarter_of_the_wave_in_flight() -> None:
    r = ro.start(
        bundle="web",
        revision="b" * 40,
        spec=model.DEFAULT_ROLLOUT,
        waves=[("all", tuple(f"c{i}" for i in range(8)))],
        from_revisions={},
        now=0.0,
    )
    step = ro.advance(r, now=1.0)
    assert step.start == ("c0", "c1")
    step = ro.advance(healthy(step.rollout, "c0", 2.0), now=2.0)
    assert step.start == ("c2",)
    assert step.rollout.phase is ro.Phase.PROGRESSING


def test_a_failure_in_the_canary_halts_and_no_later_wave_starts() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("prod", conc="100%"), ["prod-1", "prod-2"])])
    step = ro.advance(r, now=1.0)
    assert step.start == ("dev-1",)
    r = ro.applied(step.rollout, "dev-1", now=2.0, ok=True)
    r = ro.health(
        r,
        "dev-1",
        now=3.0,
        verdict=ro.Verdict.DEGRADED,
        observed_at=3.0,
        message="Deployment/web/api unavailable",
    )
    step = ro.advance(r, now=3.0)
    assert step.start == ()
    assert step.rollout.phase is ro.Phase.HALTED
    assert "dev-1: degraded" in step.rollout.reason and "Deployment/web/api" in step.rollout.reason
    assert ro.target(step.rollout, "prod-1") == "a" * 40


def test_a_halt_is_latched_when_the_failed_cluster_recovers() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("prod"), ["prod-1"])], deadline=10)
    r = ro.advance(r, now=0.0).rollout
    r = ro.applied(r, "dev-1", now=1.0, ok=True)
    r = ro.advance(r, now=11.0).rollout  # deadline passed
    assert r.phase is ro.Phase.HALTED and r.members["dev-1"].reason is ro.FailReason.DEADLINE
    r = ro.health(r, "dev-1", now=12.0, verdict=H, observed_at=12.0)
    step = ro.advance(r, now=13.0)
    assert step.rollout.phase is ro.Phase.HALTED
    assert step.start == ()


def test_resume_gives_the_failed_clusters_another_try() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("prod"), ["prod-1"])])
    r = ro.advance(r, now=0.0).rollout
    r = ro.applied(r, "dev-1", now=1.0, ok=False, message="admission webhook denied")
    r = ro.advance(r, now=1.0).rollout
    assert r.phase is ro.Phase.HALTED and r.members["dev-1"].reason is ro.FailReason.APPLY
    r = ro.act(r, ro.Action.RESUME, actor="alice", reason="webhook fixed", now=5.0)
    step = ro.advance(r, now=5.0)
    assert step.start == ("dev-1",)
    assert [a.action for a in step.rollout.actions] == ["resume"]
    assert step.rollout.actions[0].actor == "alice"


def test_skipping_the_failed_cluster_lifts_the_halt() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("prod"), ["prod-1"])])
    r = ro.advance(r, now=0.0).rollout
    r = ro.advance(ro.applied(r, "dev-1", now=1.0, ok=False, message="denied"), now=1.0).rollout
    r = ro.act(r, ro.Action.SKIP, actor="bob", cluster="dev-1", now=2.0)
    step = ro.advance(r, now=2.0)
    assert step.start == ("prod-1",)
    assert step.rollout.members["dev-1"].phase is ro.ClusterPhase.SKIPPED


def test_a_wave_with_approval_before_waits_for_a_person() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("prod", approval="before"), ["prod-1"])])
    r = healthy(ro.advance(r, now=0.0).rollout, "dev-1", 1.0)
    step = ro.advance(r, now=1.0)
    assert step.rollout.phase is ro.Phase.WAITING_APPROVAL and step.start == ()
    assert step.rollout.wave_name == "prod"
    r = ro.act(step.rollout, ro.Action.APPROVE, actor="carol", now=2.0)
    assert ro.advance(r, now=2.0).start == ("prod-1",)


def test_a_wave_with_approval_after_waits_before_the_next_wave() -> None:
    r = begin([(wave("canary", approval="after"), ["dev-1"]), (wave("prod"), ["prod-1"])])
    r = healthy(ro.advance(r, now=0.0).rollout, "dev-1", 1.0)
    step = ro.advance(r, now=1.0)
    assert step.rollout.phase is ro.Phase.WAITING_APPROVAL
    assert step.rollout.members["dev-1"].phase is ro.ClusterPhase.DONE
    r = ro.act(step.rollout, ro.Action.APPROVE, actor="carol", wave="canary", now=2.0)
    assert ro.advance(r, now=2.0).start == ("prod-1",)


def test_approving_a_wave_that_needs_no_approval_is_not_applicable() -> None:
    r = begin([(wave("canary"), ["dev-1"])])
    with pytest.raises(ro.NotApplicable, match="needs no approval"):
        ro.act(r, ro.Action.APPROVE, actor="x", wave="canary", now=1.0)


def test_soak_restarts_when_a_cluster_degrades_during_it() -> None:
    r = begin([(wave("canary", conc=2, soak=60), ["dev-1", "dev-2"]), (wave("prod"), ["prod-1"])])
    r = ro.advance(r, now=0.0).rollout
    r = healthy(healthy(r, "dev-1", 10.0), "dev-2", 10.0)
    step = ro.advance(r, now=10.0)
    assert step.rollout.phase is ro.Phase.SOAKING and ro.next_wake(step.rollout) == 70.0
    r = ro.health(step.rollout, "dev-2", now=40.0, verdict=ro.Verdict.PROGRESSING, observed_at=40.0)
    r = ro.advance(r, now=41.0).rollout
    assert r.phase is ro.Phase.PROGRESSING
    r = ro.health(r, "dev-2", now=50.0, verdict=H, observed_at=50.0)
    step = ro.advance(r, now=71.0)
    assert step.rollout.phase is ro.Phase.SOAKING and step.start == ()
    step = ro.advance(step.rollout, now=110.0)
    assert step.start == ("prod-1",)


def test_a_cluster_never_healthy_fails_at_its_deadline() -> None:
    r = begin([(wave("all", conc=2, fails=1), ["c1", "c2"])], deadline=30)
    r = ro.advance(r, now=0.0).rollout
    r = healthy(r, "c1", 5.0)
    r = ro.applied(r, "c2", now=5.0, ok=True)
    assert ro.next_wake(r) == 30.0
    step = ro.advance(r, now=30.0)
    assert step.rollout.members["c2"].reason is ro.FailReason.DEADLINE
    assert step.rollout.phase is ro.Phase.COMPLETED  # one failure tolerated


def test_an_unreachable_cluster_fails_with_reason_unreachable_at_its_deadline() -> None:
    r = begin([(wave("all"), ["c1"])], deadline=30)
    r = ro.advance(r, now=0.0).rollout
    r = ro.applied(r, "c1", now=3.0, ok=False, unreachable=True, message="connection refused")
    r = ro.advance(r, now=31.0).rollout
    assert r.members["c1"].reason is ro.FailReason.UNREACHABLE
    assert "connection refused" in r.members["c1"].message
    assert r.phase is ro.Phase.HALTED


def test_health_observed_before_the_apply_never_advances_the_rollout() -> None:
    r = begin([(wave("all"), ["c1"])])
    r = ro.advance(r, now=0.0).rollout
    r = ro.applied(r, "c1", now=10.0, ok=True)
    r = ro.health(r, "c1", now=11.0, verdict=H, observed_at=9.0)
    assert r.members["c1"].phase is ro.ClusterPhase.PROGRESSING


def test_rollback_on_failure_returns_every_moved_cluster_to_its_revision() -> None:
    r = begin([(wave("all", conc=2), ["c1", "c2", "c3"])], on_failure="rollback")
    r = ro.advance(r, now=0.0).rollout
    r = healthy(r, "c1", 1.0)
    r = ro.applied(r, "c2", now=1.0, ok=False, message="denied")
    r = ro.advance(r, now=1.0).rollout
    assert r.phase is ro.Phase.ROLLED_BACK
    assert (
        ro.target(r, "c1") == "a" * 40 and ro.target(r, "c2") == "a" * 40 and ro.target(r, "c3") == "a" * 40
    )


def test_a_newer_revision_supersedes_a_halted_rollout() -> None:
    r = begin([(wave("all"), ["c1"])])
    r = ro.advance(ro.applied(ro.advance(r, now=0.0).rollout, "c1", now=1.0, ok=False), now=1.0).rollout
    r = ro.supersede(r, by="c" * 40, now=2.0)
    assert r.phase is ro.Phase.SUPERSEDED and "cccccccccccc" in r.reason
    assert ro.advance(r, now=3.0).start == ()


def test_a_cluster_registered_during_the_rollout_joins_the_last_wave() -> None:
    r = begin([(wave("canary"), ["dev-1"]), (wave("rest"), ["prod-1"])])
    r = ro.joined(ro.advance(r, now=0.0).rollout, "new-1", from_revision=None, now=1.0)
    assert r.members["new-1"].wave == 1 and r.members["new-1"].phase is ro.ClusterPhase.PENDING
    assert ro.target(r, "new-1") is None


def test_a_cluster_that_leaves_is_removed_not_failed() -> None:
    r = begin([(wave("all"), ["c1", "c2"])])
    r = ro.left(ro.advance(r, now=0.0).rollout, "c1", now=1.0)
    step = ro.advance(r, now=1.0)
    assert step.start == ("c2",)  # c1 no longer holds the only slot
    step = ro.advance(healthy(step.rollout, "c2", 2.0), now=2.0)
    assert step.rollout.members["c1"].phase is ro.ClusterPhase.REMOVED
    assert step.rollout.phase is ro.Phase.COMPLETED
    assert not ro.governs(step.rollout, "c1")


def test_clusters_whose_objects_do_not_change_are_done_at_once() -> None:
    r = begin([(wave("all"), ["c1", "c2"])], unchanged=("c1",))
    step = ro.advance(r, now=0.0)
    assert step.start == ("c2",)
    assert ro.target(step.rollout, "c1") == "b" * 40


def test_actions_that_do_not_apply_are_refused() -> None:
    r = begin([(wave("all"), ["c1"])])
    with pytest.raises(ro.NotApplicable, match="only a halted or paused rollout resumes"):
        ro.act(r, ro.Action.RESUME, actor="x", now=1.0)
    r = ro.act(r, ro.Action.ABORT, actor="x", reason="wrong commit", now=1.0)
    assert r.phase is ro.Phase.ABORTED and r.reason == "aborted by x: wrong commit"
    with pytest.raises(ro.NotApplicable, match="has ended"):
        ro.act(r, ro.Action.PAUSE, actor="x", now=2.0)
    with pytest.raises(ro.NotApplicable, match="not in it"):
        ro.act(begin([(wave("all"), ["c1"])]), ro.Action.SKIP, actor="x", cluster="nope", now=2.0)


def test_pause_halts_new_starts_and_resume_continues() -> None:
    r = begin([(wave("all"), ["c1", "c2"])])
    r = ro.advance(r, now=0.0).rollout
    r = ro.act(r, ro.Action.PAUSE, actor="dana", reason="freeze", now=1.0)
    r = healthy(r, "c1", 2.0)
    assert ro.advance(r, now=2.0).start == ()
    assert r.reason == "paused by dana: freeze"
    r = ro.act(r, ro.Action.RESUME, actor="dana", now=3.0)
    assert ro.advance(r, now=3.0).start == ("c2",)


def test_the_stored_form_round_trips() -> None:
    r = begin(
        [(wave("canary", soak=30, approval="after"), ["dev-1"]), (wave("prod", conc="50%"), ["p1", "p2"])]
    )
    r = healthy(ro.advance(r, now=0.0).rollout, "dev-1", 1.0)
    r = ro.act(r, ro.Action.APPROVE, actor="x", wave="canary", now=2.0)
    r = ro.advance(r, now=2.0).rollout
    assert ro.load(ro.dump(r)) == r


def test_the_document_shows_waves_clusters_and_the_soak_left() -> None:
    r = begin([(wave("canary", soak=60), ["dev-1"]), (wave("prod"), ["prod-1"])])
    r = ro.advance(healthy(ro.advance(r, now=0.0).rollout, "dev-1", 10.0), now=10.0).rollout
    doc = ro.document(r, now=40.0)
    assert doc["state"] == "Soaking" and doc["wave"] == "canary"
    assert doc["waves"][0]["clusters"] == {"dev-1": "Healthy"}
    assert doc["waves"][0]["soakRemainingSeconds"] == 30.0
    assert doc["waves"][1] | {"clusters": None} == {
        "name": "prod",
        "state": "Pending",
        "clusters": None,
        "approval": "none",
        "approved": False,
    }


def test_membership_puts_each_cluster_in_the_first_wave_that_selects_it() -> None:
    spec = model.RolloutSpec(
        waves=(
            model.WaveSpec(name="canary", placement=model.Placement(clusters=("dev-1",))),
            model.WaveSpec(name="prod", placement=model.Placement(clusters=("dev-1", "prod-1"))),
        )
    )

    def select(p: model.Placement, c: str) -> tuple[bool, str | None]:
        return (p.clusters is not None and c in p.clusters), None

    got = ro.membership(spec, ["dev-1", "prod-1", "edge-1", "edge-2"], select=select)
    assert got.waves == (("canary", ("dev-1",)), ("prod", ("prod-1",)))
    assert got.errors == {
        "edge-1": "no wave of spec.rollout selects cluster edge-1",
        "edge-2": "no wave of spec.rollout selects cluster edge-2",
    }


def test_a_rounds_result_is_read_as_apply_and_health() -> None:
    r = begin([(wave("all", conc=4, fails=3), ["c1", "c2", "c3", "c4"])])
    r = ro.advance(r, now=0.0).rollout
    r = ro.observe_round(r, "c1", state=model.State.SYNCED, now=1.0)
    r = ro.observe_round(r, "c2", state=model.State.PROGRESSING, now=1.0)
    r = ro.observe_round(r, "c3", state=model.State.FAILED, message="denied", now=1.0)
    r = ro.observe_round(r, "c4", state=model.State.FAILED, degraded=True, message="CrashLoop", now=1.0)
    assert phases(r) == {"c1": "Healthy", "c2": "Progressing", "c3": "Failed", "c4": "Failed"}
    assert (r.members["c3"].reason, r.members["c4"].reason) == (ro.FailReason.APPLY, ro.FailReason.DEGRADED)
    assert r.members["c2"].applied_at == 1.0
    r = ro.observe_round(r, "c2", state=model.State.UNREACHABLE, message="refused", now=2.0)
    assert r.members["c2"].unreachable_since == 2.0
    r = ro.observe_round(r, "c2", state=model.State.PENDING, now=3.0)
    assert r.members["c2"].phase is ro.ClusterPhase.PROGRESSING
