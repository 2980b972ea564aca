"""What fleet records as a change (fleet.core.history): pure decisions over what a round or a rollout saw."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.core import history as hist
from fleet.core import model
from fleet.core import rollout as ro

A, B = "a" * 40, "b" * 40
AUTHORS = {A: "Ada", B: "Bea"}


def pair(**kw: object) -> hist.Pair:
    base: dict[str, object] = {
        "bundle": "web",
        "state": "Synced",
        "objects": {},
        "to_revision": B,
        "from_revision": A,
    }
    return hist.Pair(**{**base, **kw})  # type: ignore[arg-type]


def entries(*pairs: hist.Pair, **kw: object) -> list[hist.Entry]:
    return hist.of_round("eu-1", pairs, at=100.0, trace_id="t" * 32, author_of=AUTHORS.get, **kw)  # type: ignore[arg-type]


def test_an_apply_that_wrote_objects_is_synced_and_its_actor_is_the_commits_author() -> None:
    [e] = entries(pair(objects={"created": 1, "configured": 2, "unchanged": 5}))
    assert (e.cluster, e.bundle, e.outcome, e.from_revision, e.to_revision) == ("eu-1", "web", "Synced", A, B)
    assert e.objects == {"created": 1, "configured": 2} and e.actor == "Bea" and e.trace_id == "t" * 32


def test_a_round_that_wrote_nothing_records_nothing() -> None:
    assert entries(pair(objects={"unchanged": 3}), pair(bundle="db", state="Progressing")) == []


def test_objects_written_again_at_the_revision_a_pair_already_held_are_a_drift_repair_by_fleet() -> None:
    [e] = entries(pair(from_revision=B, objects={"configured": 1}))
    assert (e.outcome, e.actor) == ("DriftRepaired", "fleet")


def test_a_failing_pair_is_recorded_once_per_distinct_failure_not_once_per_retry() -> None:
    [first] = entries(pair(state="Failed", message="ConfigMap/apps/x: forbidden"))
    assert (first.outcome, first.message, first.actor) == ("Failed", "ConfigMap/apps/x: forbidden", "Bea")
    assert (
        entries(
            pair(
                state="Failed",
                message="ConfigMap/apps/x: forbidden",
                failed_before="ConfigMap/apps/x: forbidden",
            )
        )
        == []
    )
    [other] = entries(
        pair(state="Failed", message="quota exceeded", failed_before="ConfigMap/apps/x: forbidden")
    )
    assert other.message == "quota exceeded"
    [wrote] = entries(
        pair(state="Failed", message="same", failed_before="same", objects={"created": 1, "failed": 1})
    )
    assert wrote.objects == {"created": 1, "failed": 1}


def test_objects_deleted_from_a_cluster_alone_are_pruned_whether_the_bundle_left_or_shrank() -> None:
    [e] = entries(pair(removed=True, objects={"deleted": 3}))
    assert (e.outcome, e.objects, e.actor) == ("Pruned", {"deleted": 3}, "Bea")
    assert entries(pair(removed=True, objects={})) == []
    [taken_out] = entries(pair(objects={"deleted": 1, "unchanged": 2}))
    assert (taken_out.outcome, taken_out.objects) == ("Pruned", {"deleted": 1})
    [mixed] = entries(pair(objects={"deleted": 1, "created": 1}))
    assert mixed.outcome == "Synced"


def test_a_rollback_is_recorded_with_the_person_who_asked_for_it() -> None:
    [e] = entries(
        pair(to_revision=A, from_revision=B, objects={"configured": 2}, rollback=True),
        rollback_actor=lambda bundle: "grace",
    )
    assert (e.outcome, e.from_revision, e.to_revision, e.actor) == ("RolledBack", B, A, "grace")


def test_a_message_is_one_bounded_line() -> None:
    [e] = entries(pair(state="Failed", message="line one\nline two " + "x" * 2000))
    assert "\n" not in e.message and len(e.message) == hist.MAX_MESSAGE


def test_a_drift_repair_by_a_watch_is_one_entry_per_bundle_written_back() -> None:
    got = hist.of_repair(
        "eu-1",
        {"web": {"configured": 2}, "db": {"unchanged": 1}, "cache": {"failed": 1}},
        revisions={"web": B},
        at=5.0,
        trace_id=None,
    )
    assert [(e.bundle, e.outcome, e.from_revision, e.to_revision, e.objects, e.actor) for e in got] == [
        ("web", "DriftRepaired", B, B, {"configured": 2}, "fleet")
    ]


def rollout(**kw: object) -> ro.Rollout:
    spec = model.RolloutSpec(waves=(model.WaveSpec(name="all"),))
    r = ro.start(
        bundle="web", revision=B, spec=spec, waves=[("all", ("eu-1",))], from_revisions={"eu-1": A}, now=0.0
    )
    return replace(r, **kw)  # type: ignore[arg-type]


def test_a_halt_and_an_automatic_rollback_are_recorded_and_a_persons_rollback_is_its_action() -> None:
    r = rollout()
    [halt] = hist.of_rollout(r, replace(r, phase=ro.Phase.HALTED, reason="eu-1 failed: degraded"), at=9.0)
    assert (halt.cluster, halt.outcome, halt.to_revision, halt.actor, halt.message) == (
        "",
        "Halted",
        B,
        "fleet",
        "eu-1 failed: degraded",
    )
    [auto] = hist.of_rollout(r, replace(r, phase=ro.Phase.ROLLED_BACK, reason="onFailure rollback"), at=9.0)
    assert (auto.outcome, auto.actor) == ("RolledBack", "fleet")
    record = ro.ActionRecord(action="rollback", actor="grace", reason="bad", at=9.0)
    by_person = replace(r, phase=ro.Phase.ROLLED_BACK, actions=(record,))
    assert hist.of_rollout(r, by_person, at=9.0) == []
    action = hist.of_action(by_person, record)
    assert (action.outcome, action.actor, action.reason, action.cluster) == ("rollback", "grace", "bad", "")
    assert hist.rollback_actor(by_person) == "grace" and hist.rollback_actor(None) == "fleet"
    skip = hist.of_action(r, ro.ActionRecord(action="skip", actor="ada", reason="", at=1.0, cluster="eu-1"))
    assert skip.cluster == "eu-1"
    assert hist.of_rollout(None, r, at=1.0) == [] and hist.of_rollout(r, r, at=1.0) == []


def test_an_entry_document_has_the_api_shape() -> None:
    e = hist.Entry(at=1767225600.25, cluster="", bundle="web", outcome="pause", to_revision=B, actor="ada")
    assert e.document() == {
        "at": "2026-01-01T00:00:00.250Z",
        "cluster": None,
        "bundle": "web",
        "outcome": "pause",
        "fromRevision": None,
        "toRevision": B,
        "objects": {},
        "traceId": None,
        "actor": "ada",
        "reason": None,
        "message": None,
    }


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cluster": "EU 1"}, "cluster 'EU 1': not a cluster or bundle name"),
        ({"since": "soon"}, "since: 'soon' is not a duration"),
        ({"revision": "xyz"}, "revision 'xyz': not a commit id"),
        ({"limit": "0"}, "limit 0: must be between 1 and 10000"),
        ({"limit": "ten"}, "limit 'ten': not a whole number"),
    ],
)
def test_a_bad_query_parameter_is_refused_naming_it(kw: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        hist.query(now=1000.0, **kw)  # type: ignore[arg-type]


def test_since_is_a_duration_back_from_now_or_an_rfc3339_time() -> None:
    assert hist.query(since="24h", now=100_000.0).since == 100_000.0 - 86_400
    assert hist.query(since="2026-01-01T00:00:00Z", now=0.0).since == 1767225600.0
    q = hist.query(cluster="eu-1", bundle="web", revision="ABCD12", limit="5", now=0.0)
    assert (q.cluster, q.bundle, q.revision, q.limit) == ("eu-1", "web", "abcd12", 5)
