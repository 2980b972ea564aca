"""The pure half of drift: what counts as drift, fights with another writer, the objects the engine applies."""

from __future__ import annotations

import base64
import copy
from typing import Any

from fleet.core import drift, model, plan

INSTANCE = "fleet"


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "app", "annotations": {model.ANNOTATION_REVISION: "abc"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]
                }
            },
        },
    }


def marked(obj: dict[str, Any], bundle: str = "web") -> dict[str, Any]:
    return plan.marked(obj, bundle=bundle, instance=INSTANCE)


def wanted(obj: dict[str, Any]) -> drift.Wanted:
    return drift.Wanted.of(model.ObjectRef.of(obj), obj)


def live_of(obj: dict[str, Any]) -> dict[str, Any]:
    """What a server hands back: defaults, server fields, managedFields, other people's labels."""
    live = copy.deepcopy(obj)
    meta = live["metadata"]
    meta.update(
        resourceVersion="42",
        uid="u-1",
        generation=1,
        managedFields=[{"manager": "fleet", "operation": "Apply", "time": "2026-01-01T00:00:00Z"}],
    )
    meta["annotations"].pop(model.ANNOTATION_REVISION, None)
    meta["annotations"]["deployment.kubernetes.io/revision"] = "1"
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["spec"]["revisionHistoryLimit"] = 10
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    container["ports"][0]["protocol"] = "TCP"
    live["status"] = {"replicas": 2, "readyReplicas": 2}
    return live


def test_server_defaults_status_and_managed_fields_are_not_drift() -> None:
    want = marked(deployment())
    assert drift.judge("MODIFIED", live_of(want), wanted(want)) is drift.Verdict.IN_SYNC


def test_a_label_added_by_someone_else_is_not_drift() -> None:
    want = marked(deployment())
    live = live_of(want)
    live["metadata"]["labels"]["team"] = "payments"
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.IN_SYNC


def test_a_changed_value_of_a_field_fleet_sets_is_drift() -> None:
    want = marked(deployment())
    live = live_of(want)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:9"
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.DRIFTED


def test_a_removed_field_or_an_extra_list_item_is_drift() -> None:
    want = marked(deployment())
    removed = live_of(want)
    del removed["spec"]["replicas"]
    extra = live_of(want)
    extra["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    assert drift.judge("MODIFIED", removed, wanted(want)) is drift.Verdict.DRIFTED
    assert drift.judge("MODIFIED", extra, wanted(want)) is drift.Verdict.DRIFTED


def test_an_edit_by_kubectl_that_only_moves_ownership_is_not_drift() -> None:
    want = marked(deployment())
    live = live_of(want)
    live["metadata"]["managedFields"].append(
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-02T00:00:00Z"}
    )
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.IN_SYNC
    assert drift.last_writer(live) == "kubectl-edit"


def test_numbers_compare_by_value_and_types_do_not_mix() -> None:
    want = marked(deployment())
    as_float = live_of(want)
    as_float["spec"]["replicas"] = 2.0
    as_string = live_of(want)
    as_string["spec"]["replicas"] = "2"
    assert drift.judge("MODIFIED", as_float, wanted(want)) is drift.Verdict.IN_SYNC
    assert drift.judge("MODIFIED", as_string, wanted(want)) is drift.Verdict.DRIFTED


def test_secret_string_data_is_compared_with_the_data_the_server_keeps() -> None:
    want = marked(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "app"},
            "stringData": {"k": "v"},
        }
    )
    live = copy.deepcopy(want)
    live.pop("stringData")
    live["data"] = {"k": base64.b64encode(b"v").decode()}
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.IN_SYNC
    live["data"]["k"] = base64.b64encode(b"other").decode()
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.DRIFTED


def test_the_servers_normalised_form_of_fleets_own_apply_is_accepted() -> None:
    want = marked(deployment())
    want["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "0.5"}}
    want = marked({k: v for k, v in want.items()})
    live = live_of(want)
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m"}}
    w = wanted(want)
    assert drift.judge("MODIFIED", live, w) is drift.Verdict.DRIFTED
    learned = drift.fingerprint(w.shape, live)
    assert drift.judge("MODIFIED", live, w, accepted=[learned]) is drift.Verdict.IN_SYNC


def test_deletion_of_a_desired_object_is_drift_and_anything_undesired_is_not_drifts_business() -> None:
    want = marked(deployment())
    assert drift.judge("DELETED", live_of(want), wanted(want)) is drift.Verdict.DELETED
    assert drift.judge("DELETED", live_of(want), None) is drift.Verdict.UNMANAGED
    assert drift.judge("MODIFIED", live_of(want), None) is drift.Verdict.UNMANAGED


def test_an_object_labelled_for_another_bundle_is_left_to_the_full_reconcile() -> None:
    want = marked(deployment(), bundle="web")
    live = live_of(marked(deployment(), bundle="old"))
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.MOVING


def test_the_fingerprint_changes_only_with_the_values_fleet_sets() -> None:
    want = marked(deployment())
    s = drift.shape(want)
    live = live_of(want)
    base = drift.fingerprint(s, live)
    live["status"]["readyReplicas"] = 0
    live["metadata"]["resourceVersion"] = "43"
    assert drift.fingerprint(s, live) == base
    live["spec"]["replicas"] = 3
    assert drift.fingerprint(s, live) != base


def test_a_different_revision_annotation_live_is_not_drift() -> None:
    want = marked(deployment())
    live = live_of(want)
    live["metadata"]["annotations"][model.ANNOTATION_REVISION] = "an-older-commit"
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.IN_SYNC
    live["metadata"]["annotations"][plan.ANNOTATION_HASH] = "edited"
    assert drift.judge("MODIFIED", live, wanted(want)) is drift.Verdict.DRIFTED


def test_repairs_beyond_the_limit_within_the_window_back_off_exponentially() -> None:
    guard = drift.FightGuard(limit=3, window=10.0, backoff=5.0, cap=12.0)
    ref = model.ObjectRef("", "v1", "ConfigMap", "app", "c")
    k = plan.key(ref)
    assert [guard.record(k, t, ref=ref) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert guard.next_allowed(k, 2.0) == 2.0
    first = guard.record(k, 3.0, ref=ref, writer="rival")
    assert first is not None and first.backoff == 5.0 and first.repairs == 4
    assert guard.next_allowed(k, 3.0) == 8.0
    assert "rival" in first.message and "ConfigMap/app/c" in first.message
    second = guard.record(k, 8.0, ref=ref)
    third = guard.record(k, 18.0, ref=ref)
    assert second is not None and second.backoff == 10.0
    assert third is not None and third.backoff == 12.0  # capped
    assert guard.fighting(k, 20.0)
    assert guard.fights == 3


def test_a_fight_ends_after_a_calm_window() -> None:
    guard = drift.FightGuard(limit=1, window=10.0, backoff=5.0)
    ref = model.ObjectRef("", "v1", "ConfigMap", "app", "c")
    k = plan.key(ref)
    guard.record(k, 0.0, ref=ref)
    assert guard.record(k, 1.0, ref=ref) is not None  # backs off until 6.0
    assert not guard.fighting(k, 17.0)
    assert guard.record(k, 17.0, ref=ref) is None  # calm for a window: repairs again at once
    assert guard.next_allowed(k, 17.0) == 17.0


def test_the_guard_forgets_calm_objects_when_it_tracks_too_many() -> None:
    guard = drift.FightGuard(limit=5, window=1.0, max_tracked=3)
    for i in range(10):
        ref = model.ObjectRef("", "v1", "ConfigMap", "app", f"c{i}")
        guard.record(plan.key(ref), float(i * 2), ref=ref)
    assert len(guard._tracks) <= 3


def test_desired_objects_are_what_a_full_reconcile_applies() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "app"}, "data": {}}
    shared = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "app"}}
    targets = {
        "web": plan.Target("web", desired=model.DesiredSet("web", "c1", (cm, shared), "h1")),
        "db": plan.Target("db", desired=model.DesiredSet("db", "c1", (shared,), "h2")),
        "off": plan.Target(
            "off", desired=model.DesiredSet("off", "c1", (deployment(),), "h3"), suspended=True
        ),
        "bad": plan.Target("bad", error="render failed"),
    }
    out = drift.desired_objects(targets, instance=INSTANCE)
    assert list(out) == [model.ObjectRef("", "v1", "ConfigMap", "app", "c")]
    assert out[model.ObjectRef.of(cm)] == plan.marked(cm, bundle="web", instance=INSTANCE)
    assert drift.kinds(out) == {("v1", "ConfigMap")}


def test_the_desired_index_finds_an_object_whatever_version_it_is_read_at() -> None:
    want = marked(deployment())
    index = drift.DesiredIndex({model.ObjectRef.of(want): want})
    found = index.get(("apps", "Deployment", "app", "web"))
    assert found is not None and found.bundle == "web"
    assert index.get(("apps", "Deployment", "app", "other")) is None
