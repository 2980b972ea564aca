"""Which failed rounds a rollout retries and which fail a cluster at once (fleet.core.rollout.observe_round,
docs/rollouts.md "Which failures are retried"): pure values, explicit times."""

from __future__ import annotations

from fleet.core import model
from fleet.core import rollout as ro

FAILED = model.State.FAILED
BUSY = "Deployment/web/api: 503 ServiceUnavailable: the server is currently unable to handle the request"


def canary_then_rest(*, deadline: float = 60) -> ro.Rollout:
    def wave(name: str) -> model.WaveSpec:
        return model.WaveSpec(name=name, max_concurrency=model.Count(100, percent=True))

    spec = model.RolloutSpec(waves=(wave("canary"), wave("rest")), progress_deadline=deadline)
    r = ro.start(
        bundle="web",
        revision="b" * 40,
        spec=spec,
        waves=[("canary", ("dev-1",)), ("rest", ("prod-1", "prod-2"))],
        from_revisions={},
        now=0.0,
    )
    step = ro.advance(r, now=0.0)
    assert step.start == ("dev-1",)
    return step.rollout


def test_a_round_failed_only_by_retriable_errors_keeps_the_cluster_in_flight_with_its_message() -> None:
    r = canary_then_rest()
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=1.0)
    m = r.members["dev-1"]
    assert m.phase is ro.ClusterPhase.PROGRESSING and m.reason is None
    assert (m.retrying_since, m.message) == (1.0, BUSY)
    step = ro.advance(r, now=2.0)
    assert step.rollout.phase is ro.Phase.PROGRESSING and step.start == ()
    assert ro.document(step.rollout, now=2.0)["waves"][0]["retrying"] == {"dev-1": BUSY}


def test_a_retried_round_that_goes_through_moves_the_rollout_on() -> None:
    r = canary_then_rest()
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=1.0)
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=3.0)
    assert r.members["dev-1"].retrying_since == 1.0  # since the first failure of the run
    r = ro.observe_round(r, "dev-1", state=model.State.SYNCED, now=7.0)
    m = r.members["dev-1"]
    assert (m.phase, m.applied_at, m.retrying_since, m.message) == (ro.ClusterPhase.HEALTHY, 7.0, None, "")
    step = ro.advance(r, now=7.0)
    assert step.start == ("prod-1", "prod-2")
    assert "retrying" not in ro.document(step.rollout, now=7.0)["waves"][0]


def test_a_retriable_failure_still_there_at_the_deadline_fails_the_cluster_with_reason_apply() -> None:
    r = canary_then_rest(deadline=60)
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message="first error", now=1.0)
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=50.0)
    assert ro.next_wake(r) == 60.0
    assert ro.advance(r, now=59.0).rollout.phase is ro.Phase.PROGRESSING
    r = ro.advance(r, now=60.0).rollout
    m = r.members["dev-1"]
    assert (m.phase, m.reason) == (ro.ClusterPhase.FAILED, ro.FailReason.APPLY)
    assert m.message == f"still failing when retried until the progress deadline (1m): {BUSY}"
    assert r.phase is ro.Phase.HALTED and BUSY in r.reason and "dev-1: apply" in r.reason


def test_a_refusal_a_retry_cannot_fix_fails_at_once_even_after_retried_rounds() -> None:
    r = canary_then_rest()
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=1.0)
    invalid = 'Deployment/web/api: 422 Invalid: spec.replicas: Invalid value: "x"'
    r = ro.observe_round(r, "dev-1", state=FAILED, message=invalid, now=2.0)
    m = r.members["dev-1"]
    assert (m.phase, m.reason, m.message) == (ro.ClusterPhase.FAILED, ro.FailReason.APPLY, invalid)
    assert ro.advance(r, now=2.0).rollout.phase is ro.Phase.HALTED


def test_an_unhealthy_object_is_degraded_whatever_the_retriable_flag_says() -> None:
    r = canary_then_rest()
    r = ro.observe_round(
        r, "dev-1", state=FAILED, degraded=True, retriable=True, message="CrashLoop", now=1.0
    )
    assert r.members["dev-1"].reason is ro.FailReason.DEGRADED


def test_unreachable_then_retriable_then_unreachable_keeps_only_the_last_kind_of_failure() -> None:
    r = canary_then_rest()
    r = ro.observe_round(r, "dev-1", state=model.State.UNREACHABLE, message="refused", now=1.0)
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=2.0)
    assert (r.members["dev-1"].unreachable_since, r.members["dev-1"].retrying_since) == (None, 2.0)
    r = ro.observe_round(r, "dev-1", state=model.State.UNREACHABLE, message="refused", now=3.0)
    assert (r.members["dev-1"].unreachable_since, r.members["dev-1"].retrying_since) == (3.0, None)
    r = ro.advance(r, now=60.0).rollout
    assert r.members["dev-1"].reason is ro.FailReason.UNREACHABLE


def test_a_cluster_being_retried_is_stored_and_loaded_as_it_was() -> None:
    r = canary_then_rest()
    r = ro.observe_round(r, "dev-1", state=FAILED, retriable=True, message=BUSY, now=1.0)
    assert ro.load(ro.dump(r)) == r
    old = ro.dump(r)
    for m in old["members"].values():  # stored by a version that did not retry
        del m["retryingSince"]
    assert ro.load(old).members["dev-1"].retrying_since is None
